"""When an idle server is stopped (pure: the config and times in, decisions out).

The hub runs jupyterhub-idle-culler as a managed service (:mod:`posehub.idleculler`); its
``cull_arbiter_hook`` is :func:`arbiter`, which reads the server's profile from its saved state and
applies that profile's limit. Servers report their activity to the hub often enough for the shortest
limit (:func:`activity_interval`), and JupyterLab asks its own server how long it has been idle to
warn before the stop (:mod:`posehub.labidle`).
"""

from __future__ import annotations

from datetime import timedelta

from cost_reports import profile_rules

from .config import PoseHubConfig
from .idlewarn import IDLE_LIMIT_ENV, IDLE_WARN_ENV, warning  # noqa: F401 - the workspace's side, named here too

STATE_IDLE_LIMIT = "idle_seconds"  # in a server's saved state: its limit when it started (admins' setting included)
ACTIVITY_ENV = "JUPYTERHUB_ACTIVITY_INTERVAL"  # JupyterHub's singleuser: seconds between activity reports
MAX_ACTIVITY_INTERVAL = 300  # JupyterHub's own default for both activity reports
MIN_ACTIVITY_INTERVAL = 5


def idle_limit(cfg: PoseHubConfig, profile: dict | None) -> float:
    """Seconds without activity before a server of ``profile`` is stopped (an unknown profile: the default)."""
    return profile_rules.idle_minutes_of(cfg["culling"], profile) * 60


def activity_interval(limit_seconds: float) -> int:
    """How often a server tells the hub it is active: four times within its limit, at most every 5 minutes."""
    return int(max(MIN_ACTIVITY_INTERVAL, min(MAX_ACTIVITY_INTERVAL, limit_seconds / 4)))


def state_of(profile_slug: str, limit_seconds: float) -> dict:
    """What a server's saved state keeps for the culler's :func:`arbiter` (empty before a profile is known)."""
    return {"profile": profile_slug, STATE_IDLE_LIMIT: limit_seconds} if profile_slug else {}


def from_state(state: dict) -> tuple[str, float]:
    """(profile slug, idle limit in seconds) from a server's saved state; ("", 0.0) when none was kept."""
    return state.get("profile", ""), float(state.get(STATE_IDLE_LIMIT) or 0)


def server_env(cfg: PoseHubConfig, limit_seconds: float) -> dict:
    """A server's environment for its limit: how often it reports activity, and when JupyterLab warns."""
    return {ACTIVITY_ENV: str(activity_interval(limit_seconds)), IDLE_LIMIT_ENV: str(int(limit_seconds)),
            IDLE_WARN_ENV: str(cfg["culling"]["warn_minutes"])}


def shortest_limit(cfg: PoseHubConfig) -> float:
    return min(idle_limit(cfg, p) for p in cfg["profiles"])


def should_cull(cfg: PoseHubConfig, profile_slug: str | None, inactive: timedelta, limit: float | None = None) -> bool:
    """Past its limit: ``limit`` (seconds, the one the server started with) or else its profile's in posehub.yaml."""
    if not cfg["culling"]["enabled"]:
        return False
    return inactive.total_seconds() >= (limit or idle_limit(cfg, cfg.profile(profile_slug or "")))


def arbiter(cfg: PoseHubConfig):
    """jupyterhub-idle-culler's ``cull_arbiter_hook``: the limit the server started with decides (an admin's
    change applies from the next spawn), else its profile's (its ``state``, read with the ``admin:server_state``
    scope)."""

    def decide(inactive, inactive_limit, server, **_):
        state = (server or {}).get("state") or {}
        return should_cull(cfg, state.get("profile"), inactive, float(state.get(STATE_IDLE_LIMIT) or 0) or None)

    return decide


def culler_settings(cfg: PoseHubConfig) -> dict:
    """``IdleCuller`` traits: ``timeout`` is the shortest limit (the arbiter applies each profile's own),
    ``max_age`` in seconds (0: none)."""
    c = cfg["culling"]
    return {"timeout": int(shortest_limit(cfg)), "cull_every": int(c["check_every_seconds"]),
            "max_age": int(float(c["max_age_hours"]) * 3600), "cull_users": False, "remove_named_servers": False,
            "cull_admin_users": True}
