"""The Kubernetes deployment (deploy/): chart values rendered from posehub.yaml, checked against the
charts' schemas (from ../shared/schemas when present), the hub pod's hooks, the CLI, Terraform's format."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from posehub.names import USERNAME_PATTERN

from posehub import profiles
from posehub.k8s import cli as helm_cli
from posehub.k8s import helm, nodes

from posehub.k8s import hubpod as kubehub
from posehub.config import DEFAULT_CONFIG, load

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO.parent / "shared" / "schemas"
REG, TAG, NS = "ghcr.io/posehub", "0.1.0", "posehub"
HUB_ROLE = "arn:aws:iam::123456789012:role/posehub-hub"  # terraform's hub_role_arn: issues users' S3 credentials
OIDC_SECRET_VALUE = "oidc-s3cret-value"
DB_PASSWORD = "db-pa55word"

needs_schemas = pytest.mark.skipif(not (SCHEMAS / "z2jh-values.schema.yaml").exists(),
                                   reason=f"the charts' values schemas are not here ({SCHEMAS} is missing)")


def render(cfg) -> tuple[dict, dict]:
    return (helm.z2jh_values(cfg, registry=REG, tag=TAG, hub_role_arn=HUB_ROLE, namespace=NS),
            helm.dask_gateway_values(cfg, registry=REG, tag=TAG, namespace=NS))


# On Kubernetes the buckets are S3's (local folders are refused: test_local_buckets_are_refused_for_kubernetes)
S3_BUCKETS = {"backend": "s3", "region": "us-east-1", "sts": {"role_arn": "arn:aws:iam::123456789012:role/posehub-users"},
              "shared": [{"name": "lab-openfield", "read_only": True}],
              "home": {"name": "lab-homes"}}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The embedded config as a lab would deploy it on Kubernetes (its buckets on S3)."""
    return load(write_config(tmp_path_factory.mktemp("embedded")))


# On Kubernetes the ledger is PostgreSQL's (the hub pod and the Dask gateway both write it); rendering never
# connects to it. Tests that run the hub pod's hooks use SQLite in their state folder (``costs={}``) or a real
# PostgreSQL (test_charts).
PG_LEDGER = {"db_url": "postgresql+psycopg://posehub@db.example.edu/costs"}


def write_config(tmp_path, **changes) -> Path:
    """The embedded config with S3 buckets, the ledger on PostgreSQL, and ``changes`` (top-level keys replaced),
    state in tmp_path."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["hub"]["state_dir"] = str(tmp_path / "state")
    raw["buckets"] = dict(S3_BUCKETS)
    raw["costs"] = dict(PG_LEDGER)
    raw.update(changes)
    path = tmp_path / "posehub.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def oidc_gpu(tmp_path, monkeypatch):
    """Single sign-on, PostgreSQL with passwords in the URLs, a two-GPU profile, a prebuilt image."""
    monkeypatch.setenv("POSEHUB_OIDC_SECRET", OIDC_SECRET_VALUE)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    path = write_config(
        tmp_path,
        groups={},
        auth={"type": "oidc", "oidc": {
            "institution_name": "Example University", "issuer_url": "https://login.example.edu/realms/lab",
            "client_id": "posehub", "client_secret_env": "POSEHUB_OIDC_SECRET", "admin_groups": ["pi"],
            "allowed_groups": ["lab"], "callback_url": "https://posehub.example.edu/hub/oauth_callback"}},
        hub={**raw["hub"], "db_url": f"postgresql+psycopg://hub:{DB_PASSWORD}@db.example.edu/hub"},
        costs={"db_url": f"postgresql+psycopg://costs:{DB_PASSWORD}@db.example.edu/costs"},
        images={**raw["images"], "pose": {"registry_image": "registry.example.edu/lab/pose:2025.1"}},
        profiles=raw["profiles"] + [{"slug": "gpu2", "display_name": "Two GPUs", "image": "pose", "cpu": 16,
                                     "memory": "64G", "gpus": 2, "price_per_hour": 2.5, "allowed_users": ["pi"]}],
        dask={"max_gpus_per_user": 2},
    )
    return load(path)


def profile_entries(values) -> dict:
    return {p["slug"]: p for p in values["singleuser"]["profileList"]}


# ---------------------------------------------------------------- profiles


@pytest.mark.parametrize("which", ["embedded", "oidc_gpu"])
def test_every_profile_has_its_image_cpu_memory_and_gpus(which, request):
    cfg = request.getfixturevalue(which)
    entries = profile_entries(render(cfg)[0])
    assert list(entries) == [p["slug"] for p in cfg["profiles"]]  # config order
    for p in cfg["profiles"]:
        e = entries[p["slug"]]
        o = e["kubespawner_override"]
        expected_image = cfg["images"][p["image"]]["registry_image"] or f"{REG}/posehub-{p['image']}:{TAG}"
        assert (e["display_name"], o["image"]) == (p["display_name"], expected_image)
        assert o["cpu_limit"] == float(p["cpu"]) and o["mem_limit"] == p["memory"]
        # guaranteed what a node of its type can give (all of it for an instance type PoseHub does not know)
        fit = nodes.requests_for(p, profiles.memory_bytes(p["memory"]))
        assert (o["cpu_guarantee"], o["mem_guarantee"]) == (fit if fit else (float(p["cpu"]), p["memory"]))
        assert e["description"].startswith(p["description"]) and f"${p['price_per_hour']:.2f}/h" in e["description"]
        if p["gpus"]:
            assert o["extra_resource_limits"] == {"nvidia.com/gpu": str(p["gpus"])}
        else:
            assert "extra_resource_limits" not in o


def test_embedded_images_and_gpu_placement(embedded):
    entries = profile_entries(render(embedded)[0])
    assert entries["cpu-small"]["kubespawner_override"]["image"] == "ghcr.io/posehub/posehub-base:0.1.0"
    assert entries["pose-cpu"]["kubespawner_override"]["image"] == "ghcr.io/posehub/posehub-pose:0.1.0"
    gpu = entries["gpu"]["kubespawner_override"]
    # on the node type its price is for (aws_instance_type), in the GPU node group
    assert gpu["node_selector"] == {"posehub.org/node-purpose": "gpu", "node.kubernetes.io/instance-type": "g5.2xlarge"}
    assert gpu["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for slug in ("cpu-small", "pose-cpu", "cpu-large"):
        o = entries[slug]["kubespawner_override"]
        assert o["node_selector"] == {"node.kubernetes.io/instance-type": embedded.profile(slug)["aws_instance_type"]}
        assert "tolerations" not in o


def test_gpu_dask_workers_go_to_gpu_nodes_with_their_gpus(oidc_gpu):
    for slug, gpus in (("gpu", 1), ("gpu2", 2)):
        conf = helm.dask_cluster_config(oidc_gpu, oidc_gpu.profile(slug), registry=REG, tag=TAG)
        assert conf["worker_extra_container_config"] == {"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
        selector = {"posehub.org/node-purpose": "gpu"}
        if oidc_gpu.profile(slug).get("aws_instance_type"):  # gpu2 has none: any node of the GPU group
            selector["node.kubernetes.io/instance-type"] = oidc_gpu.profile(slug)["aws_instance_type"]
        assert conf["worker_extra_pod_config"] == {"nodeSelector": selector, "tolerations": helm.GPU_TOLERATIONS}
        assert conf["worker_extra_pod_labels"] == conf["scheduler_extra_pod_labels"] == {"posehub.org/profile": slug}
        assert conf["cluster_max_workers"] == 2 // gpus  # dask.max_gpus_per_user: 2
        assert conf["image"] == "registry.example.edu/lab/pose:2025.1"
    cpu = helm.dask_cluster_config(oidc_gpu, oidc_gpu.profile("pose-cpu"), registry=REG, tag=TAG)
    assert cpu["worker_extra_pod_config"] == {"nodeSelector": {"node.kubernetes.io/instance-type": "m5.xlarge"}}
    assert cpu["cluster_max_workers"] == 4
    assert (cpu["worker_cores_limit"], cpu["worker_memory_limit"]) == (4, 16 << 30)
    # requested what an m5.xlarge can give (4 vCPU, 16 GiB, 58 pods): the kubelet's and daemons' shares off
    assert (cpu["worker_cores"], cpu["worker_memory"]) == (3.67, 16 * 1024**3 - (255 + 11 * 58 + 100 + 512) * 1024**2)
    assert not {"PATH", "VIRTUAL_ENV", "POSEHUB_CONFIG"} & set(cpu["environment"])  # one-machine only


# ---------------------------------------------------------------- hub: auth, secrets, database, services


def test_local_accounts_groups_and_roles_as_on_one_machine(embedded):
    hub = render(embedded)[0]["hub"]
    jh = hub["config"]["JupyterHub"]
    assert jh["authenticator_class"] == "posehub.hub.auth.PoseHubLocalAuthenticator"
    assert jh["load_groups"] == {"staff": {"users": []}}
    assert hub["config"]["Authenticator"]["admin_users"] == ["admin"]
    assert hub["config"]["PoseHubLocalAuthenticator"]["bootstrap_passwords"] == {"admin": f"{helm.STATE_DIR}/admin-password"}
    assert hub["config"]["Authenticator"]["username_pattern"] == USERNAME_PATTERN
    assert "access:services!service=cost" in hub["loadRoles"]["user"]["scopes"]
    assert "access:services!service=dask-gateway" in hub["loadRoles"]["server"]["scopes"]
    assert hub["extraConfig"] == {"posehub": "from posehub.k8s.hubpod import apply_hub_pod\n\napply_hub_pod(c)\n"}
    mounted = hub["extraFiles"]["posehub-config"]
    assert mounted["mountPath"] == hub["extraEnv"]["POSEHUB_CONFIG"] == helm.CONFIG_MOUNT
    assert mounted["data"]["hub"]["state_dir"] == helm.STATE_DIR
    assert "db" not in hub  # sqlite on the hub's volume, the chart's default


def test_services_cost_and_dask_gateway(embedded):
    jh, dg = render(embedded)
    services = jh["hub"]["services"]
    assert services["cost"]["url"] == "http://hub:8010"
    assert services["cost"]["command"] == ["python3", "-m", "posehub.costservice"]
    assert services["dask-gateway"] == {"url": "http://traefik-dask-gateway.posehub", "display": False}
    assert "api_token" not in services["dask-gateway"] and "apiToken" not in services["dask-gateway"]
    auth = dg["gateway"]["auth"]
    assert auth["type"] == "jupyterhub"
    assert auth["jupyterhub"] == {"apiUrl": "http://hub.posehub:8081/hub/api", "apiTokenFromSecretName": "hub",
                                  "apiTokenFromSecretKey": "hub.services.dask-gateway.apiToken",
                                  "jupyterhubServiceName": "dask-gateway"}
    assert dg["gateway"]["prefix"] == "/services/dask-gateway"
    # idle servers: PoseHub's culler as a hub service, as on one machine (each profile's limit, by the arbiter),
    # with its role; the chart's own (one limit for all) off
    assert jh["cull"] == {"enabled": False}
    assert services["idle-culler"]["command"] == ["python3", "-m", "posehub.idleculler"]
    assert services["idle-culler"]["environment"] == {"POSEHUB_CONFIG": helm.CONFIG_MOUNT}
    assert "admin:server_state" in jh["hub"]["loadRoles"]["posehub-idle-culler"]["scopes"]
    assert jh["hub"]["loadRoles"]["posehub-idle-culler"]["services"] == ["idle-culler"]
    assert jh["singleuser"]["extraEnv"]["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://traefik-dask-gateway.posehub:80"
    assert helm.dask_names("posehub", "lab")["traefik_url"] == "http://traefik-lab-dask-gateway.posehub"


def test_oidc_without_inlined_secrets(oidc_gpu):
    jh, dg = render(oidc_gpu)
    text = helm_cli.dump(jh) + helm_cli.dump(dg)
    assert OIDC_SECRET_VALUE not in text and DB_PASSWORD not in text
    hub = jh["hub"]
    a = hub["config"]["PoseHubOIDCAuthenticator"]
    assert hub["config"]["JupyterHub"]["authenticator_class"] == "posehub.hub.oidc.PoseHubOIDCAuthenticator"
    assert "client_secret" not in a
    assert (a["client_id"], a["oauth_callback_url"]) == ("posehub", "https://posehub.example.edu/hub/oauth_callback")
    assert (a["allowed_groups"], a["admin_groups"], a["allow_all"]) == (["lab"], ["pi"], False)
    assert hub["extraEnv"]["OAUTH_CLIENT_SECRET"] == {
        "valueFrom": {"secretKeyRef": {"name": "posehub-oidc", "key": "client-secret"}}}
    assert hub["extraEnv"]["PGPASSWORD"] == {
        "valueFrom": {"secretKeyRef": {"name": "posehub-db", "key": "password"}}}
    assert hub["db"] == {"type": "postgres", "url": "postgresql+psycopg://hub@db.example.edu/hub"}
    mounted = hub["extraFiles"]["posehub-config"]["data"]
    assert mounted["costs"]["db_url"] == "postgresql+psycopg://costs@db.example.edu/costs"
    assert mounted["auth"]["oidc"]["client_secret_env"] == "OAUTH_CLIENT_SECRET"
    assert "load_groups" not in hub["config"]["JupyterHub"]  # groups come from the identity provider


def test_oidc_settings_match_the_one_machine_wiring(oidc_gpu):
    """hubapply.apply_oidc and the rendered hub.config agree on everything but the secret."""
    from traitlets.config import Config

    from posehub.hub.hubapply import apply_oidc

    c = Config()
    apply_oidc(c, oidc_gpu)
    local = helm._plain(c.PoseHubOIDCAuthenticator)
    assert local.pop("client_secret") == OIDC_SECRET_VALUE
    assert helm.oidc_authenticator(oidc_gpu) == local
    # the hub's own settings too (one translation: hubapply.oidc_traits), e.g. the one-day sign-in cookie
    hub_config = render(oidc_gpu)[0]["hub"]["config"]["JupyterHub"]
    assert {k: hub_config[k] for k in ("authenticator_class", "cookie_max_age_days")} == helm._plain(c.JupyterHub)


def test_oidc_needs_a_callback_url(tmp_path, monkeypatch):
    monkeypatch.setenv("S", "x")
    cfg = load(write_config(tmp_path, groups={}, auth={"type": "oidc", "oidc": {
        "institution_name": "U", "issuer_url": "https://login.example.edu", "client_id": "c", "client_secret_env": "S"}}))
    with pytest.raises(helm.RenderError, match=r"^auth\.oidc\.callback_url: set it"):
        helm.z2jh_values(cfg, registry=REG, tag=TAG, hub_role_arn=HUB_ROLE)


def test_dask_on_kubernetes_needs_a_postgres_ledger(tmp_path):
    """The gateway pod meters workers into the ledger: a SQLite file on the hub's volume is refused, with the fix."""
    cfg = load(write_config(tmp_path, costs={}))
    with pytest.raises(helm.RenderError, match=r"^costs\.db_url: on Kubernetes the Dask gateway meters workers"):
        helm.dask_gateway_values(cfg, registry=REG, tag=TAG, namespace=NS)
    assert helm_cli.main(["render", "--config", str(write_config(tmp_path, costs={})), "--out", str(tmp_path / "o"),
                          "--registry", REG, "--tag", TAG, "--hub-role-arn", HUB_ROLE]) == 2
    assert not (tmp_path / "o" / "dask-gateway-values.yaml").exists()
    assert helm.dask_gateway_values(load(write_config(tmp_path)), registry=REG, tag=TAG, namespace=NS)


def test_postgres_hub_needs_a_postgres_ledger(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg = load(write_config(tmp_path, hub={**raw["hub"], "db_url": "postgresql+psycopg://hub@db/hub"}, costs={}))
    with pytest.raises(helm.RenderError, match=r"^costs\.db_url: "):
        helm.z2jh_values(cfg, registry=REG, tag=TAG, hub_role_arn=HUB_ROLE)


def test_node_allocatable_follows_eks_reserves_and_too_large_profiles_are_refused(tmp_path):
    # g5.2xlarge: 8 vCPU, 32 GiB, 58 pods -> 8 - 0.09 reserved - 0.25 daemons; 32 GiB - (255 + 638 + 100) MiB - 512 MiB
    cpu, memory = nodes.allocatable(nodes.INSTANCE_TYPES["g5.2xlarge"])
    assert round(cpu, 3) == 7.66 and memory == 32 * 1024**3 - (993 + 512) * 1024**2
    assert nodes.requests_for({"slug": "s", "cpu": 2, "memory": "2G", "aws_instance_type": "m5.xlarge"}, 2 << 30) \
        == (2.0, 2 << 30)  # small enough: all of it
    assert nodes.requests_for({"slug": "s", "cpu": 2, "memory": "2G", "aws_instance_type": "x9.huge"}, 2 << 30) is None
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    big = [dict(raw["profiles"][0], slug="huge", cpu=16, memory="4G", aws_instance_type="t3.medium")]
    with pytest.raises(helm.RenderError) as err:
        helm.z2jh_values(load(write_config(tmp_path, profiles=raw["profiles"] + big)), registry=REG, tag=TAG, hub_role_arn=HUB_ROLE)
    assert str(err.value) == ("profiles[huge]: 16 CPU, 4G and 0 GPU(s) do not fit a t3.medium (2 vCPU, 4 GiB, 0 GPU(s)): "
                              "make the profile smaller or pick a larger aws_instance_type")


def test_local_buckets_are_refused_for_kubernetes(tmp_path):
    cfg = load(DEFAULT_CONFIG)  # make up's: buckets are folders on the machine
    with pytest.raises(helm.RenderError) as err:
        helm.z2jh_values(cfg, registry=REG, tag=TAG, hub_role_arn=HUB_ROLE)
    assert str(err.value) == (
        "buckets.backend: 'local' keeps the buckets (openfield-demo, posehub-home) as folders on one machine, which "
        "no pod can reach; on Kubernetes use 'backend: s3' with S3 buckets (deploy/README.md), or remove "
        "buckets.shared and buckets.home")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "posehub.k8s.cli", "render", "--config", str(DEFAULT_CONFIG),
                        "--out", str(out), "--registry", REG, "--tag", TAG], capture_output=True, text=True)
    assert r.returncode == 2 and "buckets.backend: 'local' keeps the buckets" in r.stderr and not out.exists()
    no_buckets = load(write_config(tmp_path, buckets={"backend": "local", "shared": []}))
    assert helm.z2jh_values(no_buckets, registry=REG, tag=TAG, hub_role_arn=HUB_ROLE)["hub"]


def test_dask_disabled_renders_no_gateway(tmp_path):
    cfg = load(write_config(tmp_path, dask={"enabled": False}))
    out = helm_cli.render(cfg, registry=REG, tag=TAG, namespace=NS, hub_role_arn=HUB_ROLE)
    assert list(out) == ["jupyterhub"]
    jh = out["jupyterhub"]
    assert "dask-gateway" not in jh["hub"]["services"]
    assert not any(k.startswith("DASK_GATEWAY") for k in jh["singleuser"]["extraEnv"])


# ---------------------------------------------------------------- the gateway's config


def test_the_gateway_runs_posehubs_backend_with_the_hub_pods_config(embedded):
    """gateway.extraConfig, run as dask-gateway-server would: PoseHub's Kubernetes backend and authenticator, with
    posehub.yaml as the hub pod reads it (no passwords) and the images' registry and tag; each worker profile's
    cluster config uses only KubeClusterConfig's traits. (Its rules at work: tests/test_gateway_kube.py, and
    tests/test_charts.py with the chart's own gateway config.)"""
    from traitlets.config import Config

    from posehub.config import validate

    c = Config()
    values = helm.dask_gateway_values(embedded, registry=REG, tag=TAG, namespace=NS)
    exec(compile(values["gateway"]["extraConfig"]["posehub"], "gateway.extraConfig", "exec"), {"c": c})
    assert c.DaskGateway.backend_class == "posehub.gateway.kube.PoseHubKubeBackend"
    assert c.DaskGateway.authenticator_class == "posehub.gateway.auth.PoseHubAuthenticator"
    assert (c.PoseHubKubeBackend.image_registry, c.PoseHubKubeBackend.image_tag) == (REG, TAG)
    data = c.PoseHubKubeBackend.posehub_config_data
    assert data == helm.hub_pod_config(embedded)
    assert [p["slug"] for p in validate(data)["profiles"]] == [p["slug"] for p in embedded["profiles"]]
    assert values["gateway"]["image"] == {"name": f"{REG}/posehub-hub", "tag": TAG}  # posehub + dask-gateway-server
    env = {e["name"]: e for e in values["gateway"]["env"]}
    assert env["POSEHUB_CREDENTIALS_URL"]["value"] == f"http://hub.{NS}:{embedded['buckets']['sts']['credentials_port']}"
    for p in helm.dask_worker_profiles(embedded):
        assert set(helm.dask_cluster_config(embedded, p, registry=REG, tag=TAG)) <= kube_cluster_config_traits()


def kube_cluster_config_traits() -> set[str]:
    """Trait names of dask-gateway's KubeClusterConfig, read from its source (importing it needs
    kubernetes_asyncio, which only the gateway's image has)."""
    import ast
    import inspect

    from dask_gateway_server.backends import base

    source = Path(inspect.getfile(base)).parent / "kubernetes" / "backend.py"
    tree = ast.parse(source.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KubeClusterConfig")
    own = {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return own | set(base.ClusterConfig.class_trait_names())


# ---------------------------------------------------------------- the charts' schemas


@needs_schemas
@pytest.mark.parametrize("which", ["embedded", "oidc_gpu"])
def test_rendered_values_fit_the_charts_schemas(which, request):
    jh, dg = render(request.getfixturevalue(which))
    assert helm.validate_chart(jh, "jupyterhub", SCHEMAS) == []
    assert helm.validate_chart(dg, "dask-gateway", SCHEMAS) == []


@needs_schemas
def test_a_broken_value_is_reported_with_its_path(embedded):
    jh, dg = render(embedded)
    jh["hub"]["db"] = {"type": "mongodb"}
    jh["singleuser"]["cpu"] = {"limit": "lots"}
    errors = helm.validate_chart(jh, "jupyterhub", SCHEMAS)
    assert any(e.startswith("hub.db.type: ") and "mongodb" in e for e in errors), errors
    assert any(e.startswith("singleuser.cpu.limit: ") for e in errors), errors
    dg["gateway"]["backend"]["worker"]["cores"]["request"] = [2]
    dg["gateway"]["tpyo"] = 1
    errors = helm.validate_chart(dg, "dask-gateway", SCHEMAS)
    assert any(e.startswith("gateway.backend.worker.cores.request: ") for e in errors), errors
    assert any(e.startswith("gateway: ") and "'tpyo'" in e for e in errors), errors


def test_schema_errors_merge_over_the_defaults_like_helm():
    schema = {"type": "object", "additionalProperties": False, "required": ["a"],
              "properties": {"a": {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}},
                             "b": {"type": "string"}}}
    defaults = {"a": {"n": 1, "s": "x"}, "b": "y"}
    assert helm.merge_values(defaults, {"a": {"n": 2}, "b": None}) == {"a": {"n": 2, "s": "x"}}
    assert helm.schema_errors({"a": {"n": 2}}, schema, defaults) == []
    assert helm.schema_errors({"a": {"s": 3}}, schema, defaults) == ["a.s: 3 is not of type 'string'"]
    assert helm.schema_errors({}, schema) == ["(top level): 'a' is a required property"]


# ---------------------------------------------------------------- in the hub pod


def spawner(name, groups=(), admin=False, profile=None):
    """What the hooks read of a spawner (the real PoseHubKubeSpawner's storage: test_charts); ``prepared`` counts
    the storage preparations, which follow an allowed spawn only."""
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups], admin=admin)
    fake = SimpleNamespace(user=user, user_options={"profile": profile} if profile else {}, environment={}, prepared=0)

    async def prepare_storage():
        fake.prepared += 1

    fake.prepare_storage = prepare_storage
    return fake


def test_hub_pod_offers_only_allowed_profiles(tmp_path):
    from cost_reports.profile_rules import Access

    cfg = load(write_config(tmp_path, costs={}))
    (tmp_path / "state").mkdir(exist_ok=True)
    offered = helm.z2jh_values(cfg, registry=REG, tag=TAG, hub_role_arn=HUB_ROLE, namespace=NS)["singleuser"]["profileList"]
    profile_list = kubehub.restrict_profiles(cfg, offered)

    def slugs(*args, **kw):
        return [p["slug"] for p in asyncio.run(profile_list(spawner(*args, **kw)))]

    assert slugs("alice") == ["cpu-small", "pose-cpu"]
    assert slugs("bob", ["staff"]) == ["cpu-small", "pose-cpu", "cpu-large", "gpu"]
    assert len(slugs("admin", admin=True)) == 4
    # an admin's run-time setting (the admin page) applies at the next spawn, as on one machine
    from posehub.hub.costs import gate_for

    gate_for(cfg).reporter.settings.set_access("gpu", Access(("alice",), ()), expected=None, actor="admin",
                                               action="allow", old="", new="", reason="test")
    assert slugs("alice") == ["cpu-small", "pose-cpu", "gpu"]
    assert slugs("bob", ["staff"]) == ["cpu-small", "pose-cpu", "cpu-large"]


def test_hub_pod_budget_and_access_checks(tmp_path):
    from posehub.hub.spawner import ProfileError

    def check(folder, budgets, *args, **kwargs):
        (tmp_path / folder).mkdir(exist_ok=True)
        cfg = load(write_config(tmp_path / folder, budgets=budgets, costs={}))
        (tmp_path / folder / "state").mkdir(exist_ok=True)
        s = spawner(*args, **kwargs)
        try:
            asyncio.run(kubehub.budget_check(cfg)(s))
        finally:
            assert s.prepared == (0 if s.environment == {} else 1)
        return s

    small = {"default": 0.15, "groups": {"staff": 100}}
    check("a", small, "alice", profile="cpu-small")  # a $0.10 block fits $0.15
    bob = check("a", small, "bob", ["staff"], profile="gpu")
    # his server's idle limit is the GPU profile's (culling.gpu_idle_minutes: 30), kept for PoseHub's culler, and his
    # JupyterLab reports activity and warns by it
    assert (bob.profile_slug, bob.idle_limit_seconds) == ("gpu", 1800)
    assert {k: bob.environment[k] for k in ("JUPYTERHUB_ACTIVITY_INTERVAL", "POSEHUB_IDLE_LIMIT_SECONDS")} == {
        "JUPYTERHUB_ACTIVITY_INTERVAL": "300", "POSEHUB_IDLE_LIMIT_SECONDS": "1800"}
    with pytest.raises(ProfileError) as err:
        check("a", small, "alice", profile="gpu")
    assert err.value.status_code == 403 and str(err.value) == (
        "You may not use the profile 'gpu'. Ask the lab's PoseHub admin for access.")
    with pytest.raises(ProfileError) as err:
        check("a", small, "alice", profile="pose-cpu")  # $0.20 > $0.15
    assert str(err.value).startswith("Not enough budget to start 'Pose estimation (CPU)': it needs $0.20")
    with pytest.raises(ProfileError) as err:
        check("b", {"default": 0}, "alice")  # no profile asked: the first one offered
    assert str(err.value).startswith("Not enough budget to start 'Small CPU'")


def test_apply_hub_pod(tmp_path):
    from traitlets.config import Config

    cfg = load(write_config(tmp_path, costs={}))
    values = helm.z2jh_values(cfg, registry=REG, tag=TAG, hub_role_arn=HUB_ROLE)
    c = Config()
    with pytest.raises(RuntimeError, match="singleuser.profileList is not set"):
        kubehub.apply_hub_pod(c, cfg, environ={})
    c = Config()
    c.KubeSpawner.profile_list = values["singleuser"]["profileList"]
    c.KubeSpawner.environment = {"A": "1"}
    c.JupyterHub.services = [dict(values["hub"]["services"]["cost"], name="cost")]
    kubehub.apply_hub_pod(c, cfg, environ={"PGPASSWORD": "pw", "OTHER": "x"})
    assert (tmp_path / "state").is_dir()
    assert [p["slug"] for p in asyncio.run(c.KubeSpawner.profile_list(spawner("alice")))] == ["cpu-small", "pose-cpu"]
    assert callable(c.KubeSpawner.pre_spawn_hook)
    env = c.KubeSpawner.environment
    assert env["A"] == "1" and env["POSEHUB_PROFILE"](spawner("bob", profile="gpu")) == "gpu"
    assert c.JupyterHub.services[0]["environment"] == {
        "POSEHUB_CONFIG": helm.CONFIG_MOUNT, "PGPASSWORD": "pw",
        # where the cost service stops the clusters of users over budget
        "POSEHUB_GATEWAY_URL": f"http://traefik-dask-gateway.{NS}/services/dask-gateway"}


# ---------------------------------------------------------------- the CLI


def test_cli_renders_both_files(tmp_path, embedded, capsys):
    out = tmp_path / "rendered"
    assert helm_cli.main(["render", "--config", str(embedded.path), "--out", str(out),
                          "--registry", REG, "--tag", TAG, "--namespace", NS,
                          "--hub-role-arn", HUB_ROLE]) == 0
    jh, dg = render(embedded)
    assert yaml.safe_load((out / "jupyterhub-values.yaml").read_text()) == jh
    assert yaml.safe_load((out / "dask-gateway-values.yaml").read_text()) == dg
    assert (out / "jupyterhub-values.yaml").read_text().startswith("# Rendered by")
    printed = capsys.readouterr().out
    assert (f"helm upgrade --install posehub jupyterhub/jupyterhub -n {NS} -f {out / 'jupyterhub-values.yaml'} "
            f"--version {helm.CHART_VERSIONS['jupyterhub']}") in printed
    assert f"dask/dask-gateway -n {NS} -f {out / 'dask-gateway-values.yaml'} --version 2026.3.0" in printed
    if SCHEMAS.is_dir():
        assert helm_cli.main(["validate", "--schemas", str(SCHEMAS), "--dir", str(out)]) == 0
        assert "valid against the dask-gateway chart's schema" in capsys.readouterr().out


def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    args = ["--out", str(tmp_path / "out"), "--registry", REG, "--tag", TAG]
    assert helm_cli.main(["render", "--config", str(missing), *args]) == 2
    assert capsys.readouterr().err.strip() == f"posehub helm: {missing}: no such file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("images: {base: {}}\nprofiles: [{slug: x, display_name: X, image: base, price_per_hour: -1}]\n")
    assert helm_cli.main(["render", "--config", str(bad), *args]) == 2
    assert capsys.readouterr().err.strip() == f"posehub helm: {bad}: profiles[0].price_per_hour: expected a number >= 0, got -1"
    assert not (tmp_path / "out").exists()
    assert helm_cli.main(["validate", "--schemas", str(tmp_path / "none"), "--dir", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err


@needs_schemas
def test_cli_validate_reports_a_violation(tmp_path, capsys):
    out = tmp_path / "rendered"
    assert helm_cli.main(["render", "--config", str(write_config(tmp_path)), "--out", str(out), "--registry", REG,
                          "--tag", TAG, "--hub-role-arn", HUB_ROLE]) == 0
    values = yaml.safe_load((out / "jupyterhub-values.yaml").read_text())
    values["singleuser"]["profileList"] = "all of them"
    (out / "jupyterhub-values.yaml").write_text(yaml.safe_dump(values))
    assert helm_cli.main(["validate", "--schemas", str(SCHEMAS), "--dir", str(out)]) == 1
    assert "jupyterhub-values.yaml: singleuser.profileList: 'all of them' is not of type 'array'" in capsys.readouterr().err


def test_cli_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "posehub.k8s.cli", "render", "--help"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "--registry" in r.stdout


# ---------------------------------------------------------------- Terraform and the README


@pytest.mark.skipif(not shutil.which("terraform"), reason="terraform is not installed")
def test_terraform_is_formatted():
    r = subprocess.run(["terraform", "fmt", "-check", "-recursive", "deploy/terraform"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, f"not formatted (run `terraform fmt -recursive deploy/terraform`):\n{r.stdout}"


def tf_default(name: str):
    """The default of a variable in deploy/terraform/variables.tf (strings and lists of strings)."""
    text = (REPO / "deploy" / "terraform" / "variables.tf").read_text()
    block = text[text.index(f'variable "{name}" {{'):]
    value = re.search(r"default\s*=\s*(.+)", block).group(1)
    return yaml.safe_load(value)


def test_terraform_node_groups_match_the_values(embedded):
    tf = (REPO / "deploy" / "terraform" / "main.tf").read_text()
    assert 'source  = "terraform-aws-modules/eks/aws"' in tf
    assert '"posehub.org/node-purpose"     = "gpu"' in tf
    assert 'key    = "nvidia.com/gpu"' in tf and 'effect = "NO_SCHEDULE"' in tf
    assert 'resource "aws_s3_bucket" "data"' in tf
    # a node group for every instance type a profile is priced at, GPU types in the tainted GPU groups
    gpu_types = {p["aws_instance_type"] for p in embedded["profiles"] if p["gpus"]}
    cpu_types = {p["aws_instance_type"] for p in embedded["profiles"] if not p["gpus"]}
    assert gpu_types <= set(tf_default("gpu_instance_types")) and cpu_types <= set(tf_default("cpu_instance_types"))
    assert 'for t in var.gpu_instance_types : "gpu-${replace(t, ".", "-")}"' in tf
    assert "min_size       = 0" in tf  # scaled up from zero by the cluster autoscaler
    assert "attach_cluster_autoscaler_policy = true" in tf
    assert 'namespace_service_accounts = ["kube-system:cluster-autoscaler"]' in tf
    assert 'namespace_service_accounts = ["${var.namespace}:hub"]' in tf and tf_default("namespace") == NS
    example = (REPO / "deploy" / "terraform" / "terraform.tfvars.example").read_text()
    assert f'gpu_instance_types = {json.dumps(sorted(gpu_types))}' in example


def test_readme_names_the_secrets_and_releases():
    text = (REPO / "deploy" / "README.md").read_text()
    for name in (helm.OIDC_SECRET["name"], helm.OIDC_SECRET["key"], helm.DB_SECRET["name"], helm.HUB_RELEASE,
                 helm.DASK_RELEASE, "helm upgrade --install posehub jupyterhub/jupyterhub"):
        assert name in text


def test_kubernetes_code_imports_nothing_of_the_one_machine_spawner():
    """posehub.k8s shares the pure plans and the storage mechanics (s3plan, s3creds, s3broker, mounts) but nothing
    of how one machine runs servers: its spawner, system accounts, control groups."""
    import ast

    one_machine = {f"posehub.hub.{m}" for m in ("spawner", "accounts", "cgroups", "isolation", "homefiles", "limits")}
    for path in (REPO / "extensions" / "posehub" / "k8s").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ["posehub", "k8s"][: max(0, 2 - node.level + 1)] if node.level else []
                module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                names = {module, *(f"{module}.{a.name}" for a in node.names)}
                assert not names & one_machine, f"{path.name} imports {sorted(names & one_machine)}"
            elif isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & one_machine, f"{path.name}: {ast.dump(node)}"