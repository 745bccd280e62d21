"""Dask Gateway on Kubernetes without a cluster: the dask-gateway chart's own gateway and controller configs (the
``dask_gateway_config.py`` of its two ConfigMaps, as ``helm template`` rendered them from PoseHub's values, with
PoseHub's worker-profile rules in ``gateway.extraConfig``), then the real code: the Kubernetes backend turns a
user's cluster options into a cluster config (``process_cluster_options``: PoseHub's backend, as the chart's
config names it, checks access, limits and the budget against the ledger), and the controller builds the
scheduler and worker pods (``KubeController.make_pod``). Nothing reaches an API server.

    python tests/k8sgateway.py MANIFESTS.yaml CASES.json OUT.json

CASES.json: ``[{"user": "bob", "groups": ["staff"], "admin": false, "options": {"profile": "gpu"}}, ...]``;
OUT.json gets per case ``{"refused": message or null, "scheduler": pod, "worker": pod}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import yaml


def gateway_env(manifests: list[dict]) -> dict[str, str]:
    """The gateway container's own environment (values given as text)."""
    d = next(d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == "api-dask-gateway")
    return {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])
            if "value" in e}


def chart_config(manifests: list[dict], name: str):
    """The traitlets Config of the chart's ``dask_gateway_config.py`` in ConfigMap ``name``."""
    from traitlets.config import Config

    cm = next(d for d in manifests if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)
    c = Config()
    exec(compile(cm["data"]["dask_gateway_config.py"], f"{name}/dask_gateway_config.py", "exec"),
         {"c": c, "get_config": lambda: c, "__file__": f"/etc/dask-gateway/{name}/dask_gateway_config.py"})
    return c


async def run_case(backend, controller, case: dict) -> dict:
    from posehub.gateway.auth import PoseHubUser

    user = PoseHubUser(case["user"], groups=case.get("groups", []), admin=case.get("admin", False))
    try:
        # what start_cluster does before it makes the DaskCluster object
        _, config = await backend.process_cluster_options(user, backend.check_request(user, case.get("options", {})))
    except Exception as e:  # noqa: BLE001 - PublicException: what the user reads
        return {"refused": str(e), "scheduler": None, "worker": None}
    name = "abc123"
    return {"refused": None,
            "scheduler": controller.make_pod("posehub", name, config, is_worker=False),
            "worker": controller.make_pod("posehub", name, config, is_worker=True)}


def main(argv: list[str]) -> int:
    manifests_file, cases_file, out_file = argv
    manifests = [d for d in yaml.safe_load_all(Path(manifests_file).read_text()) if d]
    os.environ.setdefault("JUPYTERHUB_API_TOKEN", "from-the-hub-secret")
    from dask_gateway_server.backends.kubernetes.backend import KubeBackend
    from dask_gateway_server.backends.kubernetes.controller import KubeController
    from traitlets.utils.importstring import import_item

    c = chart_config(manifests, "api-dask-gateway")
    os.environ.update(gateway_env(manifests))
    backend = import_item(c.DaskGateway.backend_class)(config=c)  # PoseHub's, as gateway.extraConfig says
    assert isinstance(backend, KubeBackend)
    backend.setup_policy()  # what its setup() does besides reaching the API server: the config, the ledger
    backend.setup_records()
    backend.clusters, backend.username_to_clusters = {}, {}  # KubeBackend.setup's cache, empty
    controller = KubeController(config=chart_config(manifests, "controller-dask-gateway"))
    cases = json.loads(Path(cases_file).read_text())
    results = [asyncio.run(run_case(backend, controller, case)) for case in cases]
    Path(out_file).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
