"""Who may use which profile: pure functions over the config, no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from .config import PoseHubConfig


def may_use(profile: dict, username: str, groups: Iterable[str], is_admin: bool = False) -> bool:
    """True when the user may start this profile.

    A profile with neither ``allowed_users`` nor ``allowed_groups`` is open to
    everyone; admins may use every profile.
    """
    if is_admin:
        return True
    users = profile.get("allowed_users")
    allowed_groups = profile.get("allowed_groups")
    if users is None and allowed_groups is None:
        return True
    return username in (users or []) or bool(set(groups) & set(allowed_groups or []))


def allowed_profiles(
    cfg: PoseHubConfig, username: str, groups: Iterable[str], is_admin: bool = False,
    effective: list[dict] | None = None,
) -> list[dict]:
    """The profiles offered to a user, in config order: of ``effective`` (the config's profiles with admins'
    run-time settings applied, ``cost_reports.profile_rules``) when given, else of posehub.yaml."""
    groups = list(groups)
    return [p for p in (cfg["profiles"] if effective is None else effective) if may_use(p, username, groups, is_admin)]


def config_groups_of(cfg: PoseHubConfig, username: str) -> list[str]:
    """The local groups (from the config) a user belongs to."""
    return sorted(name for name, g in cfg["groups"].items() if username in g["users"])


def memory_bytes(memory: str) -> int:
    """``"4G"`` -> 4294967296."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(memory[:-1]) * units[memory[-1]])


def summary(profile: dict) -> str:
    """``"2 CPU · 4G RAM · 1 GPU · $0.50/h"``"""
    parts = [f"{profile['cpu']:g} CPU", f"{profile['memory']} RAM"]
    if profile["gpus"]:
        parts.append(f"{profile['gpus']} GPU" + ("s" if profile["gpus"] > 1 else ""))
    parts.append(f"${profile['price_per_hour']:.2f}/h")
    return " · ".join(parts)
