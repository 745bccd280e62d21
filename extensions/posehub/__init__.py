"""PoseHub: a managed JupyterHub platform for labs doing animal pose estimation."""

__version__ = "0.1.0"
