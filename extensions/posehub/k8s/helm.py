"""posehub.yaml -> values of the Zero to JupyterHub (``jupyterhub``) and ``dask-gateway`` Helm charts.

Pure renderers: :func:`z2jh_values` and :func:`dask_gateway_values` read a loaded
:class:`~posehub.config.PoseHubConfig` and return plain dicts (written as YAML by
``posehub.k8s.cli``); :func:`schema_errors` checks them against a chart's values
schema. The one-machine wiring (``posehub.hub.hubapply``) is the one translation of the
config: its ``*_traits`` functions return trait settings as data (``{section: {trait:
value}}``), set on the hub's ``c`` on one machine and written into ``hub.config`` here.

What values cannot express runs in the hub pod: ``posehub.k8s.hubpod.apply_hub_pod``,
called by the one line of ``hub.extraConfig``, narrows ``c.KubeSpawner.profile_list``
to the profiles a user may use and checks the budget before a spawn. The hub image
(``deploy/hub/Dockerfile``) has posehub installed for it; posehub.yaml is mounted
from ``hub.extraFiles``.

Names chosen here (the README's secrets and releases): the JupyterHub release
``posehub``, the dask-gateway release ``dask-gateway``, the Secrets
``posehub-oidc`` (key ``client-secret``) and ``posehub-db`` (key ``password``).
"""

from __future__ import annotations

import copy
import os
import pprint
from pathlib import Path

import jsonschema
import yaml

from .. import profiles
from ..config import PoseHubConfig, format_path, validate
from . import nodes, podstorage

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"posehub.org/node-purpose": "gpu"}
GPU_TOLERATIONS = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]

HUB_RELEASE = "posehub"
DASK_RELEASE = "dask-gateway"
CONFIG_MOUNT = "/usr/local/etc/posehub/posehub.yaml"
STATE_DIR = "/srv/jupyterhub/posehub"  # on the hub's volume (hub.db.type sqlite-pvc)
HUB_API_PORT = 8081
OIDC_SECRET = {"name": "posehub-oidc", "key": "client-secret"}
OIDC_SECRET_ENV = "OAUTH_CLIENT_SECRET"  # OAuthenticator's default source of client_secret
DB_SECRET = {"name": "posehub-db", "key": "password"}
DB_PASSWORD_ENV = "PGPASSWORD"  # read by libpq/psycopg when the URL has no password
SCHEDULER = {"cores": 1, "memory": "1G"}

CHARTS = {"jupyterhub": "z2jh", "dask-gateway": "dask-gateway"}  # chart -> file prefix in the schemas folder
# The chart versions PoseHub renders for, pinned here only: the install commands (`posehub helm render` prints
# them), the hub image (deploy/hub/Dockerfile's k8s-hub tag) and deploy/README.md are checked against them.
CHART_VERSIONS = {"jupyterhub": "4.2.0", "dask-gateway": "2026.3.0"}
KUBERNETES_VERSION = "1.31"  # deploy/terraform's default; manifests are validated against it
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"  # a service account's IAM role (IRSA)
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"  # well-known label: a profile runs on its priced type
PROFILE_LABEL = "posehub.org/profile"  # on every user pod: what its cost is attributed to (with the chart's username)
USER_ANNOTATION = "posehub.org/user"  # on Dask pods: whose they are (a hub name need not be a valid label value)
# singleuser.extraLabels: the chart's default (the hub's network policy admits pods with it), which a profile's
# extra_labels override replaces, so each profile repeats it
SINGLEUSER_LABELS = {"hub.jupyter.org/network-access-hub": "true"}


class RenderError(ValueError):
    """posehub.yaml cannot be rendered for Kubernetes; ``str()`` names the key and what to do."""


# ---------------------------------------------------------------- images and GPU placement


def image_ref(cfg: PoseHubConfig, image: str, registry: str, tag: str) -> str:
    """``images.<image>.registry_image`` if set, else ``<registry>/posehub-<image>:<tag>``."""
    return cfg["images"][image].get("registry_image") or f"{registry.rstrip('/')}/posehub-{image}:{tag}"


def split_image(ref: str) -> dict:
    """``ghcr.io/lab/posehub-pose:0.1`` -> ``{"name": "ghcr.io/lab/posehub-pose", "tag": "0.1"}``."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return {"name": ref, "tag": "latest"}
    return {"name": name, "tag": tag}


def _gpus(profile: dict) -> int:
    return int(profile.get("gpus") or 0)


# ---------------------------------------------------------------- KubeSpawner profiles


def kubespawner_profile(cfg: PoseHubConfig, profile: dict, *, registry: str, tag: str) -> dict:
    """One entry of ``singleuser.profileList``: the profile's image, CPU and memory (limits as on one machine,
    guaranteed what a node of its ``aws_instance_type`` can give), its node type, and for GPU profiles the
    GPUs and the GPU node group."""
    try:  # guaranteed what a node of its type can give (posehub.k8s.nodes), limited to the profile
        fit = nodes.requests_for(profile, profiles.memory_bytes(profile["memory"]))
    except nodes.DoesNotFit as e:
        raise RenderError(str(e)) from None
    override = {
        "image": image_ref(cfg, profile["image"], registry, tag),
        "cpu_guarantee": fit[0] if fit else float(profile["cpu"]),
        "cpu_limit": float(profile["cpu"]),
        "mem_guarantee": fit[1] if fit else profile["memory"],
        "mem_limit": profile["memory"],
        "extra_labels": {**SINGLEUSER_LABELS, PROFILE_LABEL: profile["slug"]},
    }
    selector = {INSTANCE_TYPE_LABEL: profile["aws_instance_type"]} if profile.get("aws_instance_type") else {}
    if _gpus(profile):
        selector.update(GPU_NODE_SELECTOR)
        override.update(extra_resource_limits={GPU_RESOURCE: str(_gpus(profile))},
                        tolerations=copy.deepcopy(GPU_TOLERATIONS))
    if selector:  # billed at the price of aws_instance_type: scheduled on that type only
        override["node_selector"] = selector
    description = profile["description"]
    return {
        "display_name": profile["display_name"],
        "description": f"{description} ({profiles.summary(profile)})" if description else profiles.summary(profile),
        "slug": profile["slug"],
        "kubespawner_override": override,
    }


def profile_list(cfg: PoseHubConfig, *, registry: str, tag: str) -> list[dict]:
    """Every profile, in config order; who may use which is decided in the hub pod (``posehub.k8s.hubpod``)."""
    return [kubespawner_profile(cfg, p, registry=registry, tag=tag) for p in cfg["profiles"]]


# ---------------------------------------------------------------- the hub


def _without_password(url: str, key: str) -> tuple[str, bool]:
    """A database URL without its password (which goes in the ``posehub-db`` Secret)."""
    if not url:
        return url, False
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    if u.password is None:
        return url, False
    if not u.get_backend_name().startswith("postgres"):
        raise RenderError(f"{key}: a password in the URL can only be moved to the '{DB_SECRET['name']}' Secret "
                          "for PostgreSQL; give a URL without password")
    bare = URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
    return bare.render_as_string(hide_password=False), True


def hub_pod_config(cfg: PoseHubConfig) -> dict:
    """posehub.yaml as the hub pod reads it (mounted at :data:`CONFIG_MOUNT`): state on the hub's
    volume, no passwords in database URLs, the OIDC client secret from the environment."""
    b = cfg["buckets"]
    if b["backend"] == "local" and (b["shared"] or b.get("home")):
        names = ", ".join([x["name"] for x in b["shared"]] + ([b["home"]["name"]] if b.get("home") else []))
        raise RenderError(f"buckets.backend: 'local' keeps the buckets ({names}) as folders on one machine, which "
                          "no pod can reach; on Kubernetes use 'backend: s3' with S3 buckets (deploy/README.md), or "
                          "remove buckets.shared and buckets.home")
    data = copy.deepcopy(cfg.data)
    data["hub"]["state_dir"] = STATE_DIR
    data["hub"]["db_url"], _ = _without_password(data["hub"]["db_url"], "hub.db_url")
    data["costs"]["db_url"], _ = _without_password(data["costs"]["db_url"], "costs.db_url")
    if data["auth"]["type"] == "oidc":
        data["auth"]["oidc"].update(client_secret_file="", client_secret_env=OIDC_SECRET_ENV)
    # watched folders run jobs as system accounts of one machine; on AWS, S3 event notifications to SQS are
    # the documented way (README, "Watched folders"): the hub pod runs no watch service
    data["watch"]["enabled"] = False
    return data


def _plain(value):
    """A traitlets Config (sets included) as plain YAML-able data."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def hub_traits(pod_cfg: PoseHubConfig) -> dict[str, dict]:
    """The one-machine hub's settings of auth, groups and services, as data (``posehub.hub.hubapply``'s
    ``*_traits``, the one translation of the config for both targets), plain for YAML."""
    from ..hub.hubapply import groups_traits, local_auth_traits, oidc_traits, services_traits

    traits: dict[str, dict] = {}
    auth = oidc_traits(pod_cfg) if pod_cfg["auth"]["type"] == "oidc" else local_auth_traits(pod_cfg)
    for part in (auth, groups_traits(pod_cfg), services_traits(pod_cfg)):
        for section, values in part.items():
            traits.setdefault(section, {}).update(values)
    return _plain(traits)


def oidc_authenticator(cfg: PoseHubConfig) -> dict:
    """``auth.oidc`` -> PoseHubOIDCAuthenticator settings: the one-machine hub's own translation
    (``hubapply.oidc_traits``), without the client secret (the hub pod reads it from $OAUTH_CLIENT_SECRET,
    from a Secret)."""
    from ..hub.hubapply import oidc_traits

    if not cfg["auth"]["oidc"]["callback_url"]:
        raise RenderError("auth.oidc.callback_url: set it to the hub's public address + /hub/oauth_callback "
                          "(as registered with the provider); on Kubernetes there is no default")
    return _plain(oidc_traits(cfg)["PoseHubOIDCAuthenticator"])


def _secret_env(secret: dict) -> dict:
    return {"valueFrom": {"secretKeyRef": dict(secret)}}


def dask_names(namespace: str, release: str = DASK_RELEASE) -> dict:
    """In-cluster addresses of the dask-gateway chart's services (its ``dask-gateway.fullname``)."""
    fullname = release if "dask-gateway" in release else f"{release}-dask-gateway"
    traefik = f"traefik-{fullname}.{namespace}"
    return {"fullname": fullname, "traefik_url": f"http://{traefik}", "proxy_address": f"gateway://{traefik}:80"}


def _pods(release: str, component: str) -> dict:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dask-gateway",
                                            "app.kubernetes.io/instance": release,
                                            "app.kubernetes.io/component": component}}}


HUB_SERVICE_TRAITS = ("services", "load_roles", "last_activity_interval")  # hub.services, hub.loadRoles: by the chart


def _auth_values(cfg: PoseHubConfig, traits: dict) -> tuple[dict, dict]:
    """``hub.config`` (the authenticator, groups, scopes: :func:`hub_traits` less what the chart's own keys
    carry), and the hub's environment for them."""
    config = {section: {k: v for k, v in values.items() if not (section == "JupyterHub" and k in HUB_SERVICE_TRAITS)}
              for section, values in traits.items()}
    env: dict = {"POSEHUB_CONFIG": CONFIG_MOUNT}
    if cfg["auth"]["type"] == "oidc":
        config["PoseHubOIDCAuthenticator"] = oidc_authenticator(cfg)  # (checks the callback URL)
        env[OIDC_SECRET_ENV] = _secret_env(OIDC_SECRET)
    return config, env


def _db_values(cfg: PoseHubConfig) -> tuple[dict, dict]:
    """``hub.db`` (empty: the chart's SQLite on the hub's volume) and the password's environment."""
    hub_db, hub_pw = _without_password(cfg["hub"]["db_url"], "hub.db_url")
    _, ledger_pw = _without_password(cfg["costs"]["db_url"], "costs.db_url")
    db: dict = {}
    if hub_db.startswith("postgres"):
        db = {"type": "postgres", "url": hub_db}
        if not cfg["costs"]["db_url"]:
            raise RenderError("costs.db_url: with the hub database on PostgreSQL the hub pod has no volume for "
                              "the cost ledger's SQLite file; set costs.db_url to a PostgreSQL database too")
    return db, ({DB_PASSWORD_ENV: _secret_env(DB_SECRET)} if hub_pw or ledger_pw else {})


def storage_values(cfg: PoseHubConfig, *, registry: str, tag: str, namespace: str, hub_role_arn: str) -> dict:
    """What the hub pod needs to give servers their buckets (``posehub.k8s.spawner``): its environment, the port
    of its credential endpoint, and the IAM role of its service account (IRSA); {} without buckets."""
    try:
        podstorage.check(cfg)
    except podstorage.PodStorageError as e:
        raise RenderError(str(e)) from None
    b = cfg["buckets"]
    if b["backend"] != "s3" or not (b["shared"] or b.get("home")):
        return {}
    if not hub_role_arn:
        raise RenderError("--hub-role-arn: the hub (and the Dask gateway) assume buckets.sts.role_arn for each server "
                          "with the IAM role of their service accounts: give terraform's `hub_role_arn` output")
    port = b["sts"]["credentials_port"]
    return {"port": port, "role_arn": hub_role_arn,
            "env": {podstorage.SIDECAR_IMAGE_ENV: image_ref_hub(registry, tag),
                    podstorage.CREDENTIALS_URL_ENV: f"http://hub.{namespace}:{port}"}}


def z2jh_values(cfg: PoseHubConfig, *, registry: str, tag: str, namespace: str = "posehub",
                release: str = HUB_RELEASE, dask_release: str = DASK_RELEASE, hub_role_arn: str = "") -> dict:
    """Values of the ``jupyterhub`` chart (Zero to JupyterHub) for this config."""
    from ..gateway.settings import GATEWAY_URL_ENV
    from ..hub.hubapply import COST_SERVICE, CULLER_SERVICE, DASK_SERVICE

    pod_data = hub_pod_config(cfg)
    storage = storage_values(cfg, registry=registry, tag=tag, namespace=namespace, hub_role_arn=hub_role_arn)
    traits = hub_traits(validate(copy.deepcopy(pod_data), CONFIG_MOUNT))
    hub_config, env = _auth_values(cfg, traits)
    db, db_env = _db_values(cfg)
    env.update(db_env)

    # the cost service runs in the hub pod; the proxy and the servers reach it on the hub's Service
    port = cfg["costs"]["port"]
    cost = next(s for s in traits["JupyterHub"]["services"] if s["name"] == COST_SERVICE)
    services = {COST_SERVICE: {**{k: v for k, v in cost.items() if k != "name"},
                               "url": f"http://hub:{port}",
                               "command": ["python3", "-m", "posehub.costservice"],
                               "environment": {"POSEHUB_CONFIG": CONFIG_MOUNT}}}
    roles = {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in traits["JupyterHub"]["load_roles"]}
    culler = next((s for s in traits["JupyterHub"]["services"] if s["name"] == CULLER_SERVICE), None)
    if culler is not None:  # PoseHub's culler (each profile's limit), not the chart's (one limit for all)
        services[CULLER_SERVICE] = {**{k: v for k, v in culler.items() if k != "name"},
                                    "command": ["python3", "-m", "posehub.idleculler"],
                                    "environment": {"POSEHUB_CONFIG": CONFIG_MOUNT}}
    user_env: dict = {"POSEHUB_COST_URL": f"http://hub.{namespace}:{port}/services/cost/"}
    hub_pods = {"podSelector": {"matchLabels": {"component": "hub", "release": release}}}
    hub_ingress = [{"ports": [{"port": port, "protocol": "TCP"}],
                    "from": [{"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}]}]
    user_egress = [{"to": [hub_pods], "ports": [{"port": port, "protocol": "TCP"}]}]

    if cfg["dask"].get("enabled", True):
        names = dask_names(namespace, dask_release)
        services[DASK_SERVICE] = {"url": names["traefik_url"], "display": False}  # api token: made by the chart
        # the cost service stops clusters over budget through the gateway's API (it is the gateway's admin)
        services[COST_SERVICE]["environment"][GATEWAY_URL_ENV] = f"{names['traefik_url']}/services/{DASK_SERVICE}"
        # the stock gateway reads the user's groups with the user's own (server) token
        roles["server"]["scopes"] = [*roles["server"]["scopes"], "read:users:groups!user"]
        user_env.update({
            "DASK_GATEWAY__ADDRESS": f"{names['traefik_url']}/services/{DASK_SERVICE}",
            "DASK_GATEWAY__PROXY_ADDRESS": names["proxy_address"],
            "DASK_GATEWAY__PUBLIC_ADDRESS": f"/services/{DASK_SERVICE}/",
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        })
        hub_ingress.append({"ports": [{"port": HUB_API_PORT, "protocol": "TCP"}],
                            "from": [_pods(dask_release, "gateway")]})
        user_egress.append({"to": [_pods(dask_release, "traefik")], "ports": [{"port": 8000, "protocol": "TCP"}]})

    extra_ports = [{"name": "posehub-cost", "port": port, "targetPort": port}]
    if storage:  # the servers' sidecars fetch their credentials from the hub
        env.update(storage["env"])
        sport = storage["port"]
        extra_ports.append({"name": "posehub-s3", "port": sport, "targetPort": sport})
        hub_ingress.append({"ports": [{"port": sport, "protocol": "TCP"}],
                            "from": [{"podSelector": {"matchLabels": SINGLEUSER_LABELS}}]})
        user_egress.append({"to": [hub_pods], "ports": [{"port": sport, "protocol": "TCP"}]})

    hub = {
        "image": split_image(image_ref_hub(registry, tag)),
        "config": hub_config,
        "extraEnv": env,
        "extraFiles": {"posehub-config": {"mountPath": CONFIG_MOUNT, "data": pod_data}},
        "extraConfig": {"posehub": "from posehub.k8s.hubpod import apply_hub_pod\n\napply_hub_pod(c)\n"},
        "services": services,
        "loadRoles": roles,
        "service": {"extraPorts": extra_ports},
        "networkPolicy": {"ingress": hub_ingress},
    }
    if storage:
        hub["serviceAccount"] = {"annotations": {IRSA_ANNOTATION: storage["role_arn"]}}
    if db:
        hub["db"] = db
    return {
        "hub": hub,
        "cull": {"enabled": False},  # PoseHub's culler runs as a hub service (hub.services.idle-culler)
        # the image pullers run on GPU nodes too, so a GPU node that the autoscaler adds pulls the (large) pose
        # image before anyone waits for it inside the spawn timeout
        "prePuller": {"extraTolerations": copy.deepcopy(GPU_TOLERATIONS)},
        "singleuser": {
            "image": split_image(image_ref(cfg, cfg["profiles"][0]["image"], registry, tag)),
            "defaultUrl": "/lab",
            "profileList": profile_list(cfg, registry=registry, tag=tag),
            "extraEnv": user_env,
            "networkPolicy": {"egress": user_egress},
        },
    }


def image_ref_hub(registry: str, tag: str) -> str:
    """The hub image: Zero to JupyterHub's k8s-hub with posehub installed (deploy/hub/Dockerfile)."""
    return f"{registry.rstrip('/')}/posehub-hub:{tag}"


# ---------------------------------------------------------------- dask-gateway


def dask_worker_profiles(cfg: PoseHubConfig) -> list[dict]:
    """``dask.worker_profiles`` (empty: every profile), less GPU profiles that ``dask.max_gpus_per_user``
    leaves no worker for."""
    d = cfg["dask"]
    slugs = d.get("worker_profiles") or [p["slug"] for p in cfg["profiles"]]
    chosen = [cfg.profile(s) for s in slugs]
    return [p for p in chosen if not _gpus(p) or d["max_gpus_per_user"] // _gpus(p) >= 1]


def dask_max_workers(cfg: PoseHubConfig, profile: dict) -> int:
    """Workers one cluster of ``profile`` may have: ``dask.max_workers_per_user``, and for GPU
    profiles no more than ``dask.max_gpus_per_user`` GPUs."""
    d = cfg["dask"]
    n = d["max_workers_per_user"]
    return min(n, d["max_gpus_per_user"] // _gpus(profile)) if _gpus(profile) else n


def dask_cluster_config(cfg: PoseHubConfig, profile: dict, *, registry: str, tag: str) -> dict:
    """KubeClusterConfig overrides of a cluster with ``profile`` workers: the one-machine
    ``posehub.gateway.policy.cluster_config`` (cores, threads, memory, environment), with the
    profile's image instead of a local environment, limits, and the GPU node group for GPUs."""
    from ..gateway.policy import cluster_config

    conf = cluster_config(cfg, profile, dask_max_workers(cfg, profile))
    conf["environment"] = {k: v for k, v in conf["environment"].items()
                           if k not in ("PATH", "VIRTUAL_ENV", "POSEHUB_CONFIG")}
    conf.update(
        image=image_ref(cfg, profile["image"], registry, tag),
        scheduler_cmd=["dask", "scheduler"], worker_cmd=["dask", "worker"],
        worker_cores_limit=conf["worker_cores"], worker_memory_limit=conf["worker_memory"],
    )
    fit = nodes.requests_for(profile, conf["worker_memory"])  # (z2jh_values has refused profiles that do not fit)
    if fit:  # requested what a node of the profile's type can give, as for servers
        conf["worker_cores"], conf["worker_memory"] = fit
    labels = {PROFILE_LABEL: profile["slug"]}  # the user is an annotation (USER_ANNOTATION), set per cluster
    conf.update(worker_extra_pod_labels=labels, scheduler_extra_pod_labels=dict(labels))
    selector = {INSTANCE_TYPE_LABEL: profile["aws_instance_type"]} if profile.get("aws_instance_type") else {}
    if _gpus(profile):
        conf["worker_extra_container_config"] = {"resources": {"limits": {GPU_RESOURCE: str(_gpus(profile))}}}
        selector.update(GPU_NODE_SELECTOR)
        conf["worker_extra_pod_config"] = {"tolerations": copy.deepcopy(GPU_TOLERATIONS)}
    if selector:  # workers on the node type the profile is priced at
        conf.setdefault("worker_extra_pod_config", {})["nodeSelector"] = selector
    return conf


def default_worker_profile(cfg: PoseHubConfig) -> dict:
    """``dask.default_worker_profile``, else the first worker profile open to everyone, else the first."""
    offered = dask_worker_profiles(cfg)
    if not offered:
        raise RenderError("dask.worker_profiles: no profile can run Dask workers (GPU profiles need "
                          "dask.max_gpus_per_user of at least their gpus)")
    wanted = cfg["dask"].get("default_worker_profile")
    for p in offered:
        if p["slug"] == wanted:
            return p
    return next((p for p in offered if profiles.may_use(p, "", [])), offered[0])


_GATEWAY_SNIPPET = '''\
# PoseHub's gateway, rendered by posehub.k8s.helm from posehub.yaml (change that file, not this): the Kubernetes
# backend with PoseHub's worker profiles, limits, budget and meter (posehub.gateway.kube), the cost service as
# the gateway's admin (posehub.gateway.auth).
c.DaskGateway.backend_class = "posehub.gateway.kube.PoseHubKubeBackend"
c.DaskGateway.authenticator_class = "posehub.gateway.auth.PoseHubAuthenticator"
c.PoseHubKubeBackend.image_registry = {registry!r}
c.PoseHubKubeBackend.image_tag = {tag!r}
c.PoseHubKubeBackend.meter_interval = {meter!r}
c.PoseHubKubeBackend.posehub_config_data = {data}
'''


def gateway_snippet(cfg: PoseHubConfig, *, registry: str, tag: str) -> str:
    """``gateway.extraConfig``: PoseHub's backend and authenticator, and posehub.yaml as the hub pod reads it
    (inlined: the chart mounts nothing of ours in the gateway's pod)."""
    data = hub_pod_config(cfg)
    return _GATEWAY_SNIPPET.format(registry=registry, tag=tag, meter=float(cfg["dask"]["meter_interval_seconds"]),
                                   data=pprint.pformat(data, width=100, sort_dicts=False))


def _ledger_url(cfg: PoseHubConfig) -> None:
    """The gateway meters workers into the hub's ledger: on Kubernetes a database both pods reach."""
    url = cfg["costs"]["db_url"]
    if not url.startswith("postgres"):
        raise RenderError("costs.db_url: on Kubernetes the Dask gateway meters workers into the cost ledger from "
                          "its own pod, which cannot reach the hub's SQLite file: set costs.db_url to a PostgreSQL "
                          "database (its password in the 'posehub-db' Secret), or set dask.enabled: false")


def dask_gateway_values(cfg: PoseHubConfig, *, registry: str, tag: str, namespace: str,
                        release: str = DASK_RELEASE) -> dict:
    """Values of the ``dask-gateway`` chart (Kubernetes backend): PoseHub's backend and authenticator in the hub
    image (``posehub.gateway.kube``: worker profiles open to each user, limits and budget checked at start,
    workers metered into the ledger, the owner's buckets in workers), JupyterHub auth with the token the
    jupyterhub chart made for the ``dask-gateway`` service, served under the hub's ``/services/dask-gateway``;
    the backend's defaults are the default worker profile's."""
    from ..hub.hubapply import DASK_SERVICE

    _ledger_url(cfg)
    default = dask_cluster_config(cfg, default_worker_profile(cfg), registry=registry, tag=tag)
    worker = {
        "cores": {"request": default["worker_cores"], "limit": default["worker_cores_limit"]},
        "memory": {"request": default["worker_memory"], "limit": default["worker_memory_limit"]},
        "threads": default["worker_threads"],
    }
    if "worker_extra_pod_config" in default:
        worker["extraPodConfig"] = default["worker_extra_pod_config"]
    if "worker_extra_container_config" in default:
        worker["extraContainerConfig"] = default["worker_extra_container_config"]
    env = [{"name": DB_PASSWORD_ENV, **_secret_env(DB_SECRET)}] if _db_values(cfg)[1] else []
    b = cfg["buckets"]
    if b["backend"] == "s3" and (b["shared"] or b.get("home")):  # workers' sidecars ask the hub's endpoint
        env += [{"name": podstorage.SIDECAR_IMAGE_ENV, "value": image_ref_hub(registry, tag)},
                {"name": podstorage.CREDENTIALS_URL_ENV,
                 "value": f"http://hub.{namespace}:{b['sts']['credentials_port']}"}]
    hub_image = split_image(image_ref_hub(registry, tag))
    return {
        "gateway": {
            "image": hub_image,  # posehub and dask-gateway-server (deploy/hub/Dockerfile)
            "prefix": f"/services/{DASK_SERVICE}",
            "env": env,
            "auth": {"type": "jupyterhub", "jupyterhub": {
                "apiUrl": f"http://hub.{namespace}:{HUB_API_PORT}/hub/api",
                "apiTokenFromSecretName": "hub",
                "apiTokenFromSecretKey": f"hub.services.{DASK_SERVICE}.apiToken",
                "jupyterhubServiceName": DASK_SERVICE,
            }},
            "backend": {
                "image": split_image(default["image"]),
                "environment": {k: str(v) for k, v in default["environment"].items()},
                "scheduler": {"cores": {"request": SCHEDULER["cores"], "limit": SCHEDULER["cores"]},
                              "memory": {"request": SCHEDULER["memory"], "limit": SCHEDULER["memory"]}},
                "worker": worker,
            },
            "extraConfig": {"posehub": gateway_snippet(cfg, registry=registry, tag=tag)},
        },
        # reached through the hub's proxy (/services/dask-gateway) and from the cluster only
        "traefik": {"service": {"type": "ClusterIP"}},
    }


# ---------------------------------------------------------------- chart schemas


def merge_values(defaults, values):
    """Helm's merge of user values over a chart's defaults: maps merge, everything else replaces,
    ``None`` removes a default."""
    if not (isinstance(defaults, dict) and isinstance(values, dict)):
        return copy.deepcopy(values)
    out = copy.deepcopy(defaults)
    for key, value in values.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_values(out.get(key), value)
    return out


def schema_errors(values: dict, schema: dict, defaults: dict | None = None) -> list[str]:
    """``path: problem`` for each place where ``values`` (merged over the chart's ``defaults``, as
    helm does before it validates) breaks the chart's values schema; [] when they fit."""
    merged = merge_values(defaults or {}, values)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(merged), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{format_path(list(e.absolute_path))}: {e.message}" for e in errors]


def chart_schema(schemas_dir: str | os.PathLike, chart: str) -> tuple[dict, dict]:
    """The values schema and default values of ``chart`` from ``<schemas_dir>/<prefix>-values{.schema,}.yaml``."""
    prefix = CHARTS[chart]
    d = Path(schemas_dir)
    return tuple(yaml.safe_load((d / f"{prefix}-values{kind}.yaml").read_text()) or {}
                 for kind in (".schema", ""))


def validate_chart(values: dict, chart: str, schemas_dir: str | os.PathLike) -> list[str]:
    """:func:`schema_errors` of ``values`` against ``chart``'s schema in ``schemas_dir``."""
    schema, defaults = chart_schema(schemas_dir, chart)
    return schema_errors(values, schema, defaults)
