"""jupyterhub-idle-culler's configuration (``--config``): PoseHub's idle limit of each server's profile.

The hub starts the culler as a managed service with ``POSEHUB_CONFIG`` set; the decisions are
:mod:`posehub.culling`'s.
"""

import os

from posehub import culling
from posehub.config import load

c = get_config()  # noqa: F821 - provided by traitlets when this file is loaded

_cfg = load(os.environ.get("POSEHUB_CONFIG") or None)
for _name, _value in culling.culler_settings(_cfg).items():
    setattr(c.IdleCuller, _name, _value)
c.IdleCuller.cull_arbiter_hook = culling.arbiter(_cfg)
