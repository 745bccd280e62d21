"""dask-gateway-server config of PoseHub: load posehub.yaml -> apply (see posehub.gateway.settings).

The hub runs the gateway as a managed service with this file (`posehub.hub.hubapply.apply_dask`).
"""

import sys

from posehub.config import ConfigError, load
from posehub.gateway.settings import apply

try:
    posehub_config = load()
except ConfigError as err:
    print(f"PoseHub's Dask Gateway cannot start: {err}", file=sys.stderr)
    sys.exit(2)

apply(c, posehub_config)  # noqa: F821 (c is given by dask-gateway-server)
