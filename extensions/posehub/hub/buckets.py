"""Buckets on one machine: local folders standing in for S3 buckets.

:func:`local_layout` is pure (which links a user's home gets);
:func:`posehub.hub.workspace.prepare` makes them. With ``buckets.backend: local`` each bucket is the folder
``<data_dir>/buckets/<name>`` and the user's home prefix is
``<data_dir>/buckets/<home bucket>/<username>``.
"""

from __future__ import annotations

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
    return cfg.data_dir / "buckets"


def local_layout(cfg: PoseHubConfig, username: str, groups) -> list[Link]:
    root = local_root(cfg)
    links = [
        Link(f"buckets/{b['name']}", root / b["name"], b["read_only"]) for b in visible_shared(cfg, groups)
    ]
    home = cfg["buckets"].get("home")
    if home:
        links.append(Link("home-bucket", root / home["name"] / username, False))
    return links
