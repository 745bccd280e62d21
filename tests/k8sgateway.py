"""Dask Gateway on Kubernetes without a cluster: the dask-gateway chart's own gateway and controller configs (the
``dask_gateway_config.py`` of its two ConfigMaps, as ``helm template`` rendered them from PoseHub's values, with
PoseHub's worker-profile rules in ``gateway.extraConfig``), then the real code: the Kubernetes backend turns a
user's cluster options into a cluster config (``process_cluster_options``, where access is checked), and the
controller builds the scheduler and worker pods (``KubeController.make_pod``). Nothing reaches an API server.

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


def chart_config(manifests: list[dict], name: str):
    """The traitlets Config of the chart's ``dask_gateway_config.py`` in ConfigMap ``name``."""
    from traitlets.config import Config

    cm = next(d for d in manifests if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)
    c = Config()
    exec(compile(cm["data"]["dask_gateway_config.py"], f"{name}/dask_gateway_config.py", "exec"),
         {"c": c, "get_config": lambda: c, "__file__": f"/etc/dask-gateway/{name}/dask_gateway_config.py"})
    return c


async def run_case(backend, controller, case: dict) -> dict:
    from dask_gateway_server.models import User

    user = User(case["user"], groups=case.get("groups", []), admin=case.get("admin", False))
    try:
        _, config = await backend.process_cluster_options(user, case.get("options", {}))
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

    backend = KubeBackend(config=chart_config(manifests, "api-dask-gateway"))
    controller = KubeController(config=chart_config(manifests, "controller-dask-gateway"))
    cases = json.loads(Path(cases_file).read_text())
    results = [asyncio.run(run_case(backend, controller, case)) for case in cases]
    Path(out_file).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
