"""Dask Gateway for PoseHub: a managed JupyterHub service, configured from posehub.yaml.

* :mod:`.policy` -- pure: which worker profiles a user may ask for, the limits
  of a new cluster (per-user clusters, workers, GPUs and the remaining budget),
  and the cluster configuration a profile becomes;
* :mod:`.auth` -- JupyterHub authentication, with the user's groups and admin
  flag read from the hub, and the cost service allowed to stop clusters;
* :mod:`.backend` -- the one-machine backend (local processes) with the policy
  applied at cluster start and every worker metered in the cost ledger;
* :mod:`.settings` -- the gateway's traitlets config from posehub.yaml
  (``hub_config/dask_gateway_config.py`` calls it);
* :mod:`.client` -- what the cost service uses to stop clusters at the cap.
"""
