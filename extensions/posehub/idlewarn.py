"""The workspace's side of idle culling (pure, and importable in a workspace, where the hub's packages are not):
what a server is told of its own idle limit, and what JupyterLab is told before the stop (posehub.labidle).
The hub's side is :mod:`posehub.culling`."""

from __future__ import annotations

IDLE_LIMIT_ENV = "POSEHUB_IDLE_LIMIT_SECONDS"  # what a server is told of its own limit (posehub.labidle)
IDLE_WARN_ENV = "POSEHUB_IDLE_WARN_MINUTES"


def warning(limit_seconds: float, inactive_seconds: float, warn_minutes: float) -> dict:
    """What JupyterLab is told about its own server: how long it has been idle, when it will be stopped,
    and whether to warn now."""
    left = max(0.0, limit_seconds - inactive_seconds)
    return {"idle_seconds": round(inactive_seconds), "limit_seconds": round(limit_seconds),
            "stops_in_seconds": round(left), "warn": left <= warn_minutes * 60}
