"""What runs in the hub pod on Kubernetes, from ``hub.extraConfig`` (rendered by ``posehub.k8s.helm``).

Zero to JupyterHub's own config sets KubeSpawner from the chart values first;
:func:`apply_hub_pod` then adds what values cannot express: the profiles a user
may use (``c.KubeSpawner.profile_list`` as a callable over the rendered list),
the budget check before a spawn (the same messages as on one machine), the
server's ``POSEHUB_PROFILE``, the PoseHub page templates and budget banner.
The hub image (``deploy/hub/Dockerfile``) has posehub installed for it, and
posehub.yaml is mounted at ``$POSEHUB_CONFIG``.
"""

from __future__ import annotations

import asyncio
import os

from .. import culling, profiles
from ..config import PoseHubConfig
from .helm import DB_PASSWORD_ENV

SERVICE_ENV_FROM_HUB = (DB_PASSWORD_ENV,)
SPAWNER = "posehub.k8s.spawner.PoseHubKubeSpawner"  # KubeSpawner with the user's buckets  # a managed service does not inherit the hub's environment


def template_literal(value):
    """``value`` as KubeSpawner must be given it to keep it as it is: KubeSpawner expands ``{name}``-style templates
    in the strings of environments, containers and volumes, so braces (JSON's) are doubled."""
    if isinstance(value, str):
        return value.replace("{", "{{").replace("}", "}}")
    if isinstance(value, list):
        return [template_literal(v) for v in value]
    if isinstance(value, dict):
        return {k: template_literal(v) for k, v in value.items()}
    return value


async def effective_profiles(cfg: PoseHubConfig) -> list[dict]:
    """The profiles with admins' run-time settings (read from the ledger at each spawn, as on one machine)."""
    from ..hub.costs import gate_for

    return await asyncio.to_thread(lambda: gate_for(cfg).reporter.profiles())


def restrict_profiles(cfg: PoseHubConfig, offered: list[dict]):
    """``KubeSpawner.profile_list`` as a coroutine function: the rendered list narrowed to the profiles
    the user may use now (:func:`posehub.profiles.allowed_profiles` with admins' settings)."""

    async def profile_list_for(spawner) -> list[dict]:
        user = spawner.user
        groups = sorted(g.name for g in user.groups)
        effective = await effective_profiles(cfg)
        allowed = {p["slug"] for p in profiles.allowed_profiles(cfg, user.name, groups, bool(user.admin), effective)}
        return [p for p in offered if p["slug"] in allowed]

    return profile_list_for


def budget_check(cfg: PoseHubConfig):
    """``KubeSpawner.pre_spawn_hook``: refuse a profile the user may not use, or whose minimum block
    their budget does not cover, with the same messages as on one machine; then the server's idle limit (its
    profile's, with admins' settings) and the user's buckets. The cost service opens
    and closes the server's ledger span (it reconciles with the servers the hub runs)."""

    async def pre_spawn_hook(spawner) -> None:
        from ..hub.costs import gate_for
        from ..hub.errors import ProfileError

        user = spawner.user
        groups = sorted(g.name for g in user.groups)
        offered = profiles.allowed_profiles(cfg, user.name, groups, bool(user.admin), await effective_profiles(cfg))
        slug = (spawner.user_options or {}).get("profile") or (offered[0]["slug"] if offered else "")
        profile = next((p for p in offered if p["slug"] == slug), None)
        if profile is None:
            raise ProfileError(403, f"You may not use the profile '{slug}'. "
                                    f"Ask {cfg['hub']['admin_contact']} for access.")
        check = await asyncio.to_thread(gate_for(cfg).precheck, user.name, groups, profile)
        if not check.ok:
            raise ProfileError(403, check.message)
        env = spawner.environment if isinstance(spawner.environment, dict) else {}
        if cfg["culling"]["enabled"]:  # the limit it starts with, kept in its state for the culler's arbiter
            limit = culling.idle_limit(cfg, profile)
            spawner.profile_slug, spawner.idle_limit_seconds = profile["slug"], limit
            spawner.environment = env = {**env, **culling.server_env(cfg, limit)}
        if cfg["dask"]["enabled"]:  # what the ensemble widget offers: the worker profiles the gateway accepts
            from ..gateway.policy import WORKER_PROFILES_ENV, profiles_env

            value = profiles_env(cfg, user.name, groups, bool(user.admin))
            spawner.environment = {**env, WORKER_PROFILES_ENV: template_literal(value)}
        await spawner.prepare_storage()  # (posehub.k8s.spawner) the user's buckets, once the spawn is allowed

    return pre_spawn_hook


def profile_slug(spawner) -> str:
    """``POSEHUB_PROFILE`` of a server: the profile it was started with (kept in its ledger records)."""
    return (spawner.user_options or {}).get("profile") or ""


def apply_hub_pod(c, cfg: PoseHubConfig | None = None, environ=os.environ) -> None:
    """Run by ``hub.extraConfig`` after Zero to JupyterHub's own config: profile access rules and
    the budget gate, ``POSEHUB_PROFILE`` in servers, the PoseHub page templates and budget banner,
    the state folder, the database password for the cost service."""
    from ..config import load
    from ..hub.hubapply import COST_SERVICE, TEMPLATES, budget_banner

    cfg = cfg or load()
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    offered = c.KubeSpawner.profile_list
    if not isinstance(offered, list):
        raise RuntimeError("PoseHub: singleuser.profileList is not set (render the values with `posehub helm render`)")
    c.JupyterHub.spawner_class = SPAWNER
    c.KubeSpawner.profile_list = restrict_profiles(cfg, list(offered))
    c.KubeSpawner.pre_spawn_hook = budget_check(cfg)
    env = c.KubeSpawner.environment if isinstance(c.KubeSpawner.environment, dict) else {}
    c.KubeSpawner.environment = {**env, "POSEHUB_PROFILE": profile_slug}
    c.JupyterHub.template_paths = [str(TEMPLATES)]
    c.JupyterHub.template_vars = {"posehub_budget": budget_banner(cfg), "posehub_cost_url": "/services/cost/"}
    passed = {k: environ[k] for k in SERVICE_ENV_FROM_HUB if k in environ}
    if passed and isinstance(c.JupyterHub.services, list):
        c.JupyterHub.services = [
            dict(s, environment={**(s.get("environment") or {}), **passed}) if s.get("name") == COST_SERVICE else s
            for s in c.JupyterHub.services
        ]
