"""The hub pod without a cluster: Zero to JupyterHub's own ``jupyterhub_config.py`` run with what ``helm template``
rendered from PoseHub's values (its ``hub`` ConfigMap and Secret, as the pod mounts them) and PoseHub's hub hooks
(``hub.extraConfig``), then KubeSpawner's real pod manifests for each case.

Run in its own process (the chart's config configures tornado's HTTP client for the whole process):

    python tests/k8shub.py MANIFESTS.yaml WORKDIR CASES.json OUT.json

CASES.json: ``[{"user": "bob", "groups": ["staff"], "admin": false, "profile": "gpu", "storage": false}, ...]``;
OUT.json gets, per case, ``{"offered": [slugs], "refused": message or null, "pod": manifest or null}``; with
``"storage": true`` also ``"storage"``: what the pod's ``posehub-storage`` sidecar (run here for real, from the
pod's own container spec, against the hub's credential endpoint in this process) mounted and wrote, and what
the user's Python could do with it (:func:`storage_facts`). Three deviations from the pod,
paths and an address only: the sidecar reaches the hub's endpoint on 127.0.0.1 (``hub.<namespace>`` does not
resolve here) and mounts under WORKDIR; the mounts under ``/usr/local/etc/jupyterhub/`` are read from WORKDIR (the chart's ``z2jh.py``
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


def hub_env(manifests: list[dict]) -> dict[str, str]:
    """The hub container's own environment (values given as text; those from Secrets are the test's to set)."""
    hub = next(d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == "hub")
    return {e["name"]: e["value"] for e in hub["spec"]["template"]["spec"]["containers"][0].get("env", [])
            if "value" in e}


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
    os.environ.update(hub_env(manifests), **service_env(manifests))
    os.environ.update(HELM_RELEASE_NAME="posehub", POD_NAMESPACE="posehub",
                      POSEHUB_CONFIG=str(etc / "posehub.yaml"), KUBECONFIG=str(kubeconfig))
    c = Config()
    path = str(etc / "jupyterhub_config.py")
    exec(compile((etc / "jupyterhub_config.py").read_text(), path, "exec"), {"get_config": lambda: c, "__file__": path})
    return c


def mock_user(name: str, groups=(), admin=False):
    return SimpleNamespace(name=name, id=abs(hash(name)) % 10_000, admin=admin, url=f"/user/{name}/",
                           groups=[SimpleNamespace(name=g) for g in groups], escaped_name=name)


def spawner_class(c):
    from traitlets.utils.importstring import import_item

    cls = c.JupyterHub.spawner_class
    return import_item(cls) if isinstance(cls, str) else cls


def storage_facts(pod: dict, workdir: Path, user: str) -> dict:
    """Run the pod's sidecar (its command's module, its environment) until the manifest is written, then act as the
    user's JupyterLab would: list the mounts, write through them, use posehub.storage;
    then stop the sidecar (it unmounts). Blocking: run in a thread while the hub's endpoint serves on the loop."""
    import threading

    from posehub import storage
    from posehub.hub import mounts
    from posehub.k8s import podstorage, podsync

    sidecar = next(x for x in pod["spec"]["containers"] if x["name"] == podstorage.SIDECAR)
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    port = env[podstorage.ENDPOINT_ENV].rsplit(":", 1)[1]
    env[podstorage.ENDPOINT_ENV] = f"http://127.0.0.1:{port}"
    root, manifest = workdir / f"mnt-{user}", workdir / f"storage-{user}.json"
    root.mkdir()
    stop = threading.Event()
    runner = threading.Thread(target=podsync.run, kwargs=dict(environ=env, stop=stop, root=root,
                                                              manifest_path=manifest), daemon=True)
    runner.start()
    facts: dict = {}
    try:
        for _ in range(600):
            if manifest.exists() or not runner.is_alive():
                break
            stop.wait(0.1)
        data = json.loads(manifest.read_text())
        facts["manifest"] = data
        facts["mounted"] = sorted(str(p.relative_to(root)) for p in mounts.mounts_under(root))
        home = root / "home-bucket"
        (home / "from-mount.txt").write_text(f"{user} via the mount")
        facts["home_listing"] = sorted(os.listdir(home))
        ro = next((e for e in data["buckets"] if e["read_only"]), None)
        if ro:
            try:
                (root / "buckets" / ro["bucket"] / f"{user}.txt").write_text("no")
                facts["read_only_write"] = "written"
            except OSError as e:
                facts["read_only_write"] = e.strerror
            facts["read_only_listing"] = sorted(os.listdir(root / "buckets" / ro["bucket"]))
        os.environ[storage.MANIFEST_ENV] = str(manifest)
        with storage.open("home", "from-python.txt", "w") as f:
            f.write(f"{user} via posehub.storage")
        facts["python_home"] = sorted(p.rsplit("/", 1)[1] for p in storage.filesystem().ls(storage.url()))
    finally:
        stop.set()
        runner.join(60)
        facts["left_mounted"] = [str(p) for p in mounts.mounts_under(root)]
    return facts


async def run_case(c, case: dict, workdir: Path) -> dict:
    from kubernetes_asyncio.client import ApiClient

    spawner = spawner_class(c)(config=c, user=mock_user(case["user"], case.get("groups", ()),
                                                         case.get("admin", False)), _mock=True)
    offered = [p["slug"] for p in await spawner.profile_list(spawner)]
    spawner.user_options = {"profile": case["profile"]} if case.get("profile") else {}
    try:
        await spawner.pre_spawn_hook(spawner)
    except Exception as e:  # noqa: BLE001 - the sentence a user reads
        return {"offered": offered, "refused": getattr(e, "jupyterhub_message", None) or str(e), "pod": None}
    await spawner.load_user_options()
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    out = {"offered": offered, "refused": None, "pod": pod, "state": spawner.get_state()}
    if case.get("storage"):
        out["storage"] = await asyncio.to_thread(storage_facts, pod, workdir, case["user"])
        if case.get("restart"):  # the hub restarts: its leases are gone from memory, its database keeps the state
            from posehub.hub import s3broker

            state = spawner.get_state()
            s3broker._leases.clear()
            out["after_restart"] = [await asyncio.to_thread(fetch_again, pod)]
            spawner = spawner_class(c)(config=c, user=spawner.user, _mock=True)
            spawner.load_state(state)
            spawner._lease.start_renewal()  # what poll() does for a server found running
            for _ in range(100):
                if spawner._lease.lease.credentials is not None:
                    break
                await asyncio.sleep(0.1)
            out["after_restart"].append(await asyncio.to_thread(fetch_again, pod))
        spawner.release_storage()  # what stop() does once the pod is gone (no API server here to delete it)
        out["after_stop"] = await asyncio.to_thread(fetch_again, pod)
        out["state_after_stop"] = spawner.get_state().get("storage")
    return out


def fetch_again(pod: dict) -> str:
    """What the hub's endpoint answers the pod's secret once the server has stopped."""
    from posehub.hub.s3plan import S3FS_CREDENTIALS_ENV
    from posehub.k8s import podstorage, podsync

    env = {e["name"]: e["value"] for e in next(x for x in pod["spec"]["containers"]
                                              if x["name"] == podstorage.SIDECAR)["env"]}
    try:
        podsync.fetch("http://127.0.0.1:" + env[podstorage.ENDPOINT_ENV].rsplit(":", 1)[1], env[S3FS_CREDENTIALS_ENV])
        return "answered"
    except podsync.Unavailable as e:
        return str(e)


def main(argv: list[str]) -> int:
    manifests_file, workdir, cases_file, out_file = argv
    manifests = [d for d in yaml.safe_load_all(Path(manifests_file).read_text()) if d]
    c = load_hub_config(manifests, Path(workdir))
    cases = json.loads(Path(cases_file).read_text())
    async def run_all():  # one event loop: the hub's credential endpoint serves on it
        return [await run_case(c, case, Path(workdir)) for case in cases]

    results = asyncio.run(run_all())
    Path(out_file).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
