"""The hub's side of a workspace's storage: set it up before a server starts, take it down after.

:func:`prepare` links local folders (``buckets.backend: local``) or fetches
credentials and mounts the buckets with s3fs (``s3``), then writes the manifest
that :mod:`posehub.storage` reads inside the server. :func:`release` unmounts
everything under the user's home; it is safe to call twice and after a crash.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from . import buckets, mounts, s3creds, s3plan
from ..config import PoseHubConfig

MANIFEST = Path(".posehub/storage.json")
log = logging.getLogger("posehub.hub.workspace")


def manifest_file(home: Path) -> Path:
    return home / MANIFEST


def _write_private(path: Path, data: dict) -> None:
    """Written 0600 and replaced atomically: it may hold the server's credentials."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def _local(cfg: PoseHubConfig, username: str, groups, home: Path) -> list[dict]:
    links = buckets.local_layout(cfg, username, groups)
    buckets.link_local(home, links)
    entries = []
    for link in links:
        name = "home" if link.path == "home-bucket" else link.path.split("/", 1)[1]
        entries.append({"name": name, "kind": "home" if name == "home" else "shared",
                        "bucket": link.target.name if name != "home" else link.target.parent.name,
                        "prefix": f"{username}/" if name == "home" else "", "url": str(link.target),
                        "path": str(home / link.path), "mounted": True, "note": "", "read_only": link.read_only,
                        "endpoint_url": "", "region": "", "credentials": None})
    return entries


def _s3(cfg: PoseHubConfig, username: str, groups, home: Path, logger) -> list[dict]:
    b = cfg["buckets"]
    accesses = s3plan.plan(cfg, username, groups)
    creds = s3creds.credentials_for(cfg, username, accesses)
    entries = []
    for a in accesses:
        c = creds[a.name]
        usable = not isinstance(c, s3creds.CredentialsError)
        if b["mount"]["enabled"]:
            result = mounts.mount(a, c, home, timeout=b["mount"]["timeout_seconds"], extra=b["mount"]["options"])
            mounted, note = result.mounted, result.reason
        else:
            mounted, note = False, "" if usable else str(c)
        if note:
            logger.warning("storage of %s: %s not mounted at ~/%s: %s", username, a.url, a.mountpoint, note)
        else:
            logger.info("storage of %s: mounted %s at ~/%s", username, a.url, a.mountpoint)
        # STS credentials are the server's own, limited by the session policy; static keys stay with the
        # hub (they may allow more than the config does), so Python reaches those buckets through the mount
        entries.append(s3plan.manifest_entry(a, home, mounted=mounted, note=note,
                                             credentials=c.as_dict() if usable and a.uses_sts else None))
    return entries


def prepare(cfg: PoseHubConfig, username: str, groups, home: Path, logger=log) -> Path:
    """Make the user's buckets reachable in ``home``; returns the manifest's path. Never raises for
    a bucket that cannot be reached: that bucket is skipped with a note."""
    home = Path(home)
    release(home, logger)  # mounts left by a crash of an earlier run
    if cfg["buckets"]["backend"] == "local":
        entries = _local(cfg, username, groups, home)
    else:
        entries = _s3(cfg, username, groups, home, logger)
    path = manifest_file(home)
    _write_private(path, {"backend": cfg["buckets"]["backend"], "user": username, "buckets": entries})
    return path


def release(home: Path, logger=log) -> None:
    """Unmount every s3fs mount in ``home`` (idempotent)."""
    for err in mounts.unmount_under(Path(home)):
        logger.error("storage: could not unmount %s", err)
