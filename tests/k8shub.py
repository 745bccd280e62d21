"""The hub pod without a cluster: Zero to JupyterHub's own ``jupyterhub_config.py`` run with what ``helm template``
rendered from PoseHub's values (its ``hub`` ConfigMap and Secret, as the pod mounts them) and PoseHub's hub hooks
(``hub.extraConfig``), then KubeSpawner's real pod manifests for each case.

Run in its own process (the chart's config configures tornado's HTTP client for the whole process):

    python tests/k8shub.py MANIFESTS.yaml WORKDIR CASES.json OUT.json

CASES.json: ``[{"user": "bob", "groups": ["staff"], "admin": false, "profile": "gpu"}, ...]``; OUT.json gets, per
case, ``{"offered": [slugs], "refused": message or null, "pod": manifest or null}``. Two deviations from the pod,
both paths only: the mounts under ``/usr/local/etc/jupyterhub/`` are read from WORKDIR (the chart's ``z2jh.py``
with its path prefix replaced), and the hub's state folder is in WORKDIR. Nothing reaches an API server
(``KubeSpawner(_mock=True)``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import yaml

MOUNT = "/usr/local/etc/jupyterhub/"


def hub_files(manifests: list[dict]) -> tuple[dict, dict]:
    cm = next(d for d in manifests if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "hub")
    secret = next(d for d in manifests if d["kind"] == "Secret" and d["metadata"]["name"] == "hub")
    secret_files = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    secret_files.update(secret.get("stringData") or {})
    return cm["data"], secret_files


def service_env(manifests: list[dict]) -> dict[str, str]:
    """What Kubernetes sets in every pod for each Service: ``<NAME>_SERVICE_HOST`` and ``_PORT``."""
    env = {}
    for i, d in enumerate(x for x in manifests if x["kind"] == "Service"):
        key = d["metadata"]["name"].upper().replace("-", "_")
        env[f"{key}_SERVICE_HOST"] = f"10.100.0.{i + 1}"
        env[f"{key}_SERVICE_PORT"] = str(d["spec"]["ports"][0]["port"])
    return env


def load_hub_config(manifests: list[dict], workdir: Path):
    from traitlets.config import Config

    config_files, secret_files = hub_files(manifests)
    etc = workdir / "etc"
    for sub, files in (("config", config_files), ("secret", secret_files)):
        (etc / sub).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (etc / sub / name).write_text(text)
    (etc / "z2jh.py").write_text(config_files["z2jh.py"].replace(MOUNT, f"{etc}/"))
    (etc / "jupyterhub_config.py").write_text(config_files["jupyterhub_config.py"])
    posehub = yaml.safe_load(secret_files["posehub-config"])
    posehub["hub"]["state_dir"] = str(workdir / "state")
    (etc / "posehub.yaml").write_text(yaml.safe_dump(posehub))
    kubeconfig = workdir / "kubeconfig"  # never used to connect (_mock): KubeSpawner only reads it
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none", "namespace": "posehub"}}],
        "users": [{"name": "none", "user": {"token": "none"}}]}))
    os.environ.update(service_env(manifests), HELM_RELEASE_NAME="posehub", POD_NAMESPACE="posehub",
                      POSEHUB_CONFIG=str(etc / "posehub.yaml"), KUBECONFIG=str(kubeconfig))
    c = Config()
    path = str(etc / "jupyterhub_config.py")
    exec(compile((etc / "jupyterhub_config.py").read_text(), path, "exec"), {"get_config": lambda: c, "__file__": path})
    return c


def mock_user(name: str, groups=(), admin=False):
    return SimpleNamespace(name=name, id=abs(hash(name)) % 10_000, admin=admin, url=f"/user/{name}/",
                           groups=[SimpleNamespace(name=g) for g in groups], escaped_name=name)


async def run_case(c, case: dict) -> dict:
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    spawner = KubeSpawner(config=c, user=mock_user(case["user"], case.get("groups", ()), case.get("admin", False)),
                          _mock=True)
    offered = [p["slug"] for p in await spawner.profile_list(spawner)]
    spawner.user_options = {"profile": case["profile"]} if case.get("profile") else {}
    try:
        await spawner.pre_spawn_hook(spawner)
    except Exception as e:  # noqa: BLE001 - the sentence a user reads
        return {"offered": offered, "refused": getattr(e, "jupyterhub_message", None) or str(e), "pod": None}
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    return {"offered": offered, "refused": None, "pod": ApiClient().sanitize_for_serialization(pod)}


def main(argv: list[str]) -> int:
    manifests_file, workdir, cases_file, out_file = argv
    manifests = [d for d in yaml.safe_load_all(Path(manifests_file).read_text()) if d]
    c = load_hub_config(manifests, Path(workdir))
    cases = json.loads(Path(cases_file).read_text())
    results = [asyncio.run(run_case(c, case)) for case in cases]
    Path(out_file).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
