"""posehub.yaml -> the traitlets config of ``dask-gateway-server`` (one machine).

The hub starts the gateway as a managed service (``posehub.hub.hubapply.apply_dask``)
with ``hub_config/dask_gateway_config.py``, which calls :func:`apply`. Addresses:

* ``dask.port``: the gateway's public HTTP address (its proxy), which the
  hub's proxy serves at ``/services/dask-gateway/``;
* ``dask.scheduler_port``: the TLS address clients reach schedulers through;
* ``dask.api_port``: the gateway's private API, for its own schedulers.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from ..config import PoseHubConfig
from .policy import SERVICE

PREFIX = f"/services/{SERVICE}"
# where the cost service reaches the gateway's API when it is not this machine's (Kubernetes: the chart's traefik)
GATEWAY_URL_ENV = "POSEHUB_GATEWAY_URL"


def addresses(cfg: PoseHubConfig) -> dict:
    d = cfg["dask"]
    return {
        "public": f"127.0.0.1:{d['port']}",
        "scheduler": f"127.0.0.1:{d['scheduler_port']}",
        "api": f"127.0.0.1:{d['api_port']}",
    }


def encrypt_key(state_dir: Path) -> str:
    """The key the gateway encrypts its database's secrets with: made once, kept in the state folder
    (mode 0600), so a restarted gateway finds its clusters again."""
    path = Path(state_dir) / "dask-gateway.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode())
    return path.read_text().strip()


def apply(c, cfg: PoseHubConfig) -> None:
    a = addresses(cfg)
    d = cfg["dask"]
    c.DaskGateway.address = a["api"]
    c.DaskGateway.backend_class = "posehub.gateway.backend.PoseHubLocalBackend"
    c.DaskGateway.authenticator_class = "posehub.gateway.auth.PoseHubAuthenticator"
    c.Proxy.address = a["public"]
    c.Proxy.tcp_address = a["scheduler"]
    c.Proxy.prefix = PREFIX
    c.PoseHubLocalBackend.posehub_config_file = str(cfg.path)
    c.PoseHubLocalBackend.meter_interval = float(d["meter_interval_seconds"])
    c.PoseHubLocalBackend.db_url = f"sqlite:///{cfg.state_dir / 'dask-gateway.sqlite'}"
    c.PoseHubLocalBackend.db_encrypt_keys = [encrypt_key(cfg.state_dir)]
    c.PoseHubLocalBackend.clusters_directory = str(cfg.data_dir / "dask-clusters")  # each cluster's folder is its owner's (0700)
    # PATH and VIRTUAL_ENV come from the worker profile's environment (policy.cluster_config)
    c.PoseHubLocalBackend.inherited_environment = ["LANG", "LC_ALL", "HOME", "TMPDIR"]
    c.PoseHubLocalBackend.stop_clusters_on_shutdown = True
    c.PoseHubLocalBackend.api_url = f"http://{a['api']}/api"
    c.JupyterHubAuthenticator.jupyterhub_service_name = SERVICE


def client_env(cfg: PoseHubConfig) -> dict:
    """What a workspace needs for ``dask_gateway.Gateway()`` to find this gateway with no arguments
    (on one machine it talks to the gateway's own address; the hub also serves it at the prefix)."""
    a = addresses(cfg)
    return {
        "DASK_GATEWAY__ADDRESS": f"http://{a['public']}{PREFIX}",
        "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://{a['scheduler']}",
        "DASK_GATEWAY__PUBLIC_ADDRESS": f"{PREFIX}/",
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    }
