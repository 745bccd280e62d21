"""Apply a validated :class:`~posehub.config.PoseHubConfig` to JupyterHub's ``c``.

Each ``apply_<section>(c, cfg)`` only *sets* values (never appends or mutates),
so the result depends on the config alone. This is the wiring for one machine;
the Kubernetes deployment reads the same config model elsewhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cost_reports.web import ADMIN_SCOPE

from .. import culling
from ..config import REPO_ROOT, PoseHubConfig
from ..names import USERNAME_PATTERN

PROXY_BIN = REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
TEMPLATES = Path(__file__).parent / "templates" / "hub"


def apply_hub(c, cfg: PoseHubConfig):
    """``hub.*`` -> where the hub listens and keeps its state; ``hub.tls`` -> HTTPS and Secure cookies."""
    hub, state = cfg["hub"], cfg.state_dir
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls = hub["tls"]
    scheme = "https" if tls["cert_file"] else "http"
    c.JupyterHub.bind_url = f"{scheme}://{hub['ip']}:{hub['port']}"
    if tls["cert_file"]:
        c.JupyterHub.ssl_cert = str(cfg.resolve(tls["cert_file"]))
        c.JupyterHub.ssl_key = str(cfg.resolve(tls["key_file"]))
    if tls["behind_proxy_url"]:
        c.JupyterHub.public_url = tls["behind_proxy_url"]
    if tls["cert_file"] or tls["behind_proxy_url"]:  # every cookie of the hub's, the _xsrf one too, is Secure
        c.JupyterHub.cookie_options = {"secure": True}
        c.JupyterHub.tornado_settings = {"xsrf_cookie_kwargs": {"secure": True}}
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = hub["hub_port"]
    c.JupyterHub.db_url = hub["db_url"] or f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.template_paths = [str(TEMPLATES)]


def apply_proxy(c, cfg: PoseHubConfig):
    """The configurable-http-proxy that ``make up`` installed from npm into ``node_modules``."""
    c.ConfigurableHTTPProxy.command = [str(PROXY_BIN)]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{cfg['hub']['proxy_api_port']}"
    c.ConfigurableHTTPProxy.pid_file = str(cfg.state_dir / "proxy.pid")
    c.ConfigurableHTTPProxy.should_start = True


def local_auth_traits(cfg: PoseHubConfig) -> dict[str, dict]:
    """``admins``, ``auth.local.*`` as trait settings of local accounts (NativeAuthenticator), for both targets."""
    from .auth import admin_password_file

    local = cfg["auth"]["local"]
    return {
        "JupyterHub": {"authenticator_class": "posehub.hub.auth.PoseHubLocalAuthenticator"},
        "Authenticator": {"username_pattern": USERNAME_PATTERN, "admin_users": set(cfg.admins),
                          "allow_all": True},  # approval of local sign-ups is NativeAuthenticator's job
        "NativeAuthenticator": {"open_signup": local["open_signup"],
                                "minimum_password_length": local["minimum_password_length"],
                                "check_common_password": True},
        "PoseHubLocalAuthenticator": {"bootstrap_passwords": {
            name: str(admin_password_file(cfg.state_dir, cfg.admins, name)) for name in cfg.admins}},
    }


def apply_auth(c, cfg: PoseHubConfig):
    """``admins``, ``auth.local.*`` -> local accounts (:func:`local_auth_traits`); ``auth.type: oidc`` ->
    single sign-on (:func:`apply_oidc`)."""
    if cfg["auth"]["type"] == "oidc":
        return apply_oidc(c, cfg)
    set_traits(c, local_auth_traits(cfg))


def set_traits(c, traits: dict[str, dict]) -> None:
    """Trait settings as data (``{section: {trait: value}}``) onto a traitlets config."""
    for section, values in traits.items():
        for name, value in values.items():
            setattr(c[section], name, value)


def oidc_traits(cfg: PoseHubConfig) -> dict[str, dict]:
    """``auth.oidc.*`` as trait settings of GenericOAuthenticator (PoseHubOIDCAuthenticator), the one translation
    for both targets: the one-machine hub (:func:`apply_oidc`, which adds the client secret) and the hub pod
    (``posehub.k8s.helm``: ``hub.config``, the secret from a Kubernetes Secret). Tokens are kept in the hub's
    encrypted auth state and never refreshed behind the user's back, so a provider that is down does not sign
    anyone out."""
    from .oidc import settings

    o = settings(cfg)
    a = {
        "issuer_url": o["issuer_url"],
        "institution_name": o["institution_name"],
        "login_service": o["institution_name"],  # the button: "Sign in with <institution>"
        "admin_contact": cfg["hub"]["admin_contact"],
        "client_id": o["client_id"],
        "oauth_callback_url": o["callback_url"],
        "scope": o["scopes"],
        "username_claim": o["username_claim"],
        "discovery_timeout": o["timeout_seconds"],
        "http_request_kwargs": {"connect_timeout": o["timeout_seconds"], "request_timeout": o["timeout_seconds"] * 2},
        "pass_tokens_to_server": o["pass_tokens_to_server"],
        "enable_auth_state": True,
        "refresh_pre_spawn": True,  # a server starts only for someone the provider still allows
        "auth_refresh_age": o["refresh_seconds"],  # groups, admin and access follow the provider within this time
        "allowed_groups": o["allowed_groups"],
        "admin_groups": o["admin_groups"],
        "allow_all": not o["allowed_groups"],
        "admin_users": set(),  # over single sign-on admins come from admin_groups, never from a name people may choose
        "username_pattern": USERNAME_PATTERN,
        "custom_403_message": (f"Your {o['institution_name']} account is not in a group allowed to use PoseHub. "
                               f"Ask {cfg['hub']['admin_contact']} for access."),
    }
    if o["groups_claim"]:
        a.update(auth_state_groups_key=f"oauth_user.{o['groups_claim']}", manage_groups=True)
    return {"JupyterHub": {"authenticator_class": "posehub.hub.oidc.PoseHubOIDCAuthenticator",
                           "cookie_max_age_days": 1},
            "PoseHubOIDCAuthenticator": a}


def apply_oidc(c, cfg: PoseHubConfig):
    """``auth.oidc.*`` -> the hub (:func:`oidc_traits`), with the client secret from its file or variable
    (key of the auth state: ``JUPYTERHUB_CRYPT_KEY``, set by ``posehub up``)."""
    from .oidc import client_secret

    set_traits(c, oidc_traits(cfg))
    c.PoseHubOIDCAuthenticator.client_secret = client_secret(cfg)


def groups_traits(cfg: PoseHubConfig) -> dict[str, dict]:
    """``groups.<name>.users`` -> JupyterHub groups, made at every start (local accounts only: with single
    sign-on, membership comes from the identity provider at each sign-in, manage_groups)."""
    if cfg["auth"]["type"] == "oidc":
        return {}
    groups = {name: {"users": list(g["users"])} for name, g in cfg["groups"].items()}
    for name in cfg["costs"]["admin_groups"]:  # roles may only name groups that exist
        groups.setdefault(name, {"users": []})
    return {"JupyterHub": {"load_groups": groups}}


def apply_groups(c, cfg: PoseHubConfig):
    set_traits(c, groups_traits(cfg))


def apply_spawner(c, cfg: PoseHubConfig):
    """``profiles``, ``gpus`` -> the one-machine spawner."""
    c.JupyterHub.spawner_class = "posehub.hub.spawner.PoseHubSpawner"
    c.PoseHubSpawner.config_file = str(cfg.path)
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 120


COST_SERVICE = "cost"
DASK_SERVICE = "dask-gateway"
CULLER_SERVICE = "idle-culler"
WATCH_SERVICE = "watch"
from ..watch.client import URL_ENV as WATCH_URL_ENV  # noqa: E402 - where a workspace reaches the watch service
CULLER_ROLE = "posehub-idle-culler"
COST_ADMIN_SCOPE = ADMIN_SCOPE  # the admin page's scope, named once by the service that checks it


def budget_banner(cfg: PoseHubConfig):
    """A template variable for the hub's pages: the signed-in user's budget status (or None). Pages render on the
    hub's event loop: the ledger is asked in a thread, waited for half a second at most (``costs.OffLoop``)."""

    def banner(user):
        if user is None:
            return None
        from .costs import LedgerSlow, gate_for, off_loop

        try:
            name, groups = user.name, sorted(g.name for g in user.groups)  # (the hub's database: on the loop)
            return off_loop().call(lambda: gate_for(cfg).status(name, groups))
        except LedgerSlow:
            import logging

            logging.getLogger("JupyterHub").warning("budget status of %s: the ledger did not answer in time", user.name)
            return None
        except Exception:  # noqa: BLE001 - a page must not fail because the ledger is unreachable
            import logging

            logging.getLogger("JupyterHub").exception("budget status of %s unavailable", user.name)
            return None

    return banner


def dask_service(cfg: PoseHubConfig) -> dict:
    """Dask Gateway as a managed service: the hub starts it (and restarts it with itself) and proxies
    ``/services/dask-gateway/`` to it; it checks users' tokens with the hub."""
    from ..gateway.settings import addresses

    return {
        "name": DASK_SERVICE,
        "url": f"http://{addresses(cfg)['public']}",
        "command": [sys.executable, "-m", "posehub.gateway.launch", "-f", str(REPO_ROOT / "hub_config" / "dask_gateway_config.py")],
        "environment": {"POSEHUB_CONFIG": str(cfg.path)},
        "oauth_no_confirm": True,
        "display": False,
    }


def culler_service(cfg: PoseHubConfig) -> dict:
    """jupyterhub-idle-culler as a managed service, deciding by each server's profile (posehub.culling)."""
    return {
        "name": CULLER_SERVICE,
        "command": [sys.executable, "-m", "posehub.idleculler"],
        "environment": {"POSEHUB_CONFIG": str(cfg.path)},
        "display": False,
    }


def watches_on(cfg: PoseHubConfig) -> bool:
    return bool(cfg["watch"]["enabled"] and cfg["dask"]["enabled"])


def watch_service(cfg: PoseHubConfig) -> dict:
    """Watched folders (posehub.watch.service): lists prefixes, runs each new video's analysis as its owner."""
    return {
        "name": WATCH_SERVICE,
        "url": f"http://127.0.0.1:{cfg['watch']['port']}",
        "command": [sys.executable, "-m", "posehub.watch.service"],
        "environment": {"POSEHUB_CONFIG": str(cfg.path)},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": ["read:users!user", COST_ADMIN_SCOPE],
        "display": True,
        "info": {"description": "Videos analysed as they arrive"},
    }


def services_traits(cfg: PoseHubConfig) -> dict[str, dict]:
    """``costs.*``, ``dask.*`` and ``culling.*`` as trait settings: the hub's services (the cost reporter, Dask
    Gateway, the idle culler), their roles, the admin scope; servers report their activity often enough for the
    shortest idle limit. The hub pod's values start from the same data (``posehub.k8s.helm``)."""
    costs = cfg["costs"]
    dask = cfg["dask"]["enabled"]
    services = [{
        "name": COST_SERVICE,
        "url": f"http://127.0.0.1:{costs['port']}",
        "command": [sys.executable, "-m", "posehub.costservice"],  # answers at once, then loads
        "environment": {"POSEHUB_CONFIG": str(cfg.path)},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": ["read:users!user", COST_ADMIN_SCOPE],
        "display": True,
        "info": {"description": "Your spend and budget"},
    }]
    access = [f"access:services!service={COST_SERVICE}"]
    roles = [
        {"name": "posehub-cost-service", "services": [COST_SERVICE],
         # groups, admin:groups: the admin page adds and removes members, makes groups
         "scopes": ["list:users", "read:users", "read:servers", "servers", "read:groups", "groups", "admin:groups"]
                   + ([f"access:services!service={DASK_SERVICE}"] if dask else [])},
        {"name": "posehub-cost-admins", "scopes": [COST_ADMIN_SCOPE],
         "users": list(cfg.admins) if cfg["auth"]["type"] == "local" else [], "groups": list(costs["admin_groups"])},
    ]
    if dask:
        services.append(dask_service(cfg))
        access.append(f"access:services!service={DASK_SERVICE}")
        # the gateway reads users' groups and admin flag: they decide the worker profiles a user may use
        roles.append({"name": "posehub-dask-gateway", "services": [DASK_SERVICE], "scopes": ["read:users"]})
    if watches_on(cfg):
        services.append(watch_service(cfg))
        access.append(f"access:services!service={WATCH_SERVICE}")
        # users' groups (their buckets and profiles); tokens: a short-lived gateway token of the owner per video
        roles.append({"name": "posehub-watch", "services": [WATCH_SERVICE],
                      "scopes": ["list:users", "read:users", "tokens"]})
    if cfg["culling"]["enabled"]:
        services.append(culler_service(cfg))
        # it reads each server's state for its profile (admin:server_state) and stops idle ones
        roles.append({"name": CULLER_ROLE, "services": [CULLER_SERVICE],
                      "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers",
                                 "admin:server_state"]})
    hub = {"services": services, "custom_scopes": {
        COST_ADMIN_SCOPE: {"description": "Use PoseHub's admin page and its API: everyone's spend, budgets, who may "
                                          "use each profile, idle limits, group members."},
    }, "load_roles": roles + [
        {"name": "user", "scopes": ["self", *access]},
        {"name": "server", "scopes": ["users:activity!user", "access:servers!server", *access]},
    ]}
    if cfg["culling"]["enabled"]:
        hub["last_activity_interval"] = culling.activity_interval(culling.shortest_limit(cfg))
    return {"JupyterHub": hub}


def apply_costs(c, cfg: PoseHubConfig):
    """:func:`services_traits`, and the budget banner of the hub's pages."""
    set_traits(c, services_traits(cfg))
    c.JupyterHub.template_vars = {"posehub_budget": budget_banner(cfg), "posehub_cost_url": "/services/cost/"}


def apply_all(c, cfg: PoseHubConfig):
    for apply in (apply_hub, apply_proxy, apply_auth, apply_groups, apply_spawner, apply_costs):
        apply(c, cfg)
