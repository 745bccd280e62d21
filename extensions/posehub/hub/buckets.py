"""Buckets on one machine: local folders standing in for S3 buckets.

:func:`local_layout` is pure (which links a user's home gets); :func:`link_local`
makes them. With ``buckets.backend: local`` each bucket is the folder
``<state_dir>/buckets/<name>`` and the user's home prefix is
``<state_dir>/buckets/<home bucket>/<username>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import PoseHubConfig


@dataclass(frozen=True)
class Link:
    path: str  # relative to the user's home
    target: Path
    read_only: bool


def visible_shared(cfg: PoseHubConfig, groups) -> list[dict]:
    groups = set(groups)
    return [b for b in cfg["buckets"]["shared"] if not b["groups"] or groups & set(b["groups"])]


def local_root(cfg: PoseHubConfig) -> Path:
    return cfg.state_dir / "buckets"


def local_layout(cfg: PoseHubConfig, username: str, groups) -> list[Link]:
    root = local_root(cfg)
    links = [
        Link(f"buckets/{b['name']}", root / b["name"], b["read_only"]) for b in visible_shared(cfg, groups)
    ]
    home = cfg["buckets"].get("home")
    if home:
        links.append(Link("home-bucket", root / home["name"] / username, False))
    return links


def link_local(home: Path, links: list[Link]) -> None:
    """Create the bucket folders and link them into a user's home (idempotent)."""
    for link in links:
        link.target.mkdir(parents=True, exist_ok=True)
        dest = home / link.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() and os.readlink(dest) == str(link.target):
            continue
        if dest.is_symlink():
            dest.unlink()
        if not dest.exists():
            dest.symlink_to(link.target, target_is_directory=True)
