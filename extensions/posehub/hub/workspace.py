"""The hub's side of a workspace's storage: set it up before a server starts, take it down after.

:func:`prepare` links local folders (``buckets.backend: local``) or fetches
credentials and mounts the buckets with s3fs (``s3``), then writes the manifest
that :mod:`posehub.storage` reads inside the server. :func:`release` unmounts
everything of that user; it is safe to call twice and after a crash.

Where things live on one machine (``hub.data_dir``)::

    homes/<account>/                 the user's home (theirs, 0700); the hub writes in it only through
                                     posehub.hub.homefiles (never through a link the user planted)
    homes/<account>/buckets/<name>   a link to the bucket's folder or mount
    mounts/<account>/<mountpoint>    S3 mounts (root-owned folders, 0750 to the account's group;
                                     mounted with the account's uid/gid and umask 077)
    buckets/<name>                   local buckets; buckets/<home bucket>/<user> is the user's own (0700)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import buckets, homefiles, mounts, s3broker, s3creds, s3plan
from ..config import PoseHubConfig

MANIFEST = Path(".posehub/storage.json")
log = logging.getLogger("posehub.workspace")


@dataclass(frozen=True)
class Owner:
    """The system account a workspace belongs to (None where every server runs as the hub's account)."""

    uid: int
    gid: int
    shared_gid: int  # the group every PoseHub account is in (writable shared local buckets)


def manifest_file(home: Path) -> Path:
    return home / MANIFEST


def mount_root(cfg: PoseHubConfig, home: Path) -> Path:
    """The folder of this home's S3 mounts, outside the home."""
    return cfg.data_dir / "mounts" / Path(home).name


def _ids(owner: Owner | None) -> dict:
    return {"uid": owner.uid, "gid": owner.gid} if owner else {"uid": os.geteuid(), "gid": os.getegid()}


def _dir(path: Path, mode: int, uid: int = -1, gid: int = -1) -> None:
    """A folder the hub owns (or hands to uid/gid), with exactly ``mode``."""
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise homefiles.HomeFileError(f"{path} is a symbolic link where PoseHub keeps a folder")
    if os.geteuid() == 0:
        os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)


def _local(cfg: PoseHubConfig, username: str, groups, home: Path, owner: Owner | None) -> list[dict]:
    links = buckets.local_layout(cfg, username, groups)
    root = buckets.local_root(cfg)
    _dir(root, 0o755)
    for link in links:
        if link.path == "home-bucket":  # the user's own prefix: theirs alone
            _dir(link.target.parent, 0o711)
            _dir(link.target, 0o700, *(owner.uid, owner.gid) if owner else (-1, -1))
        elif owner is None:
            _dir(link.target, 0o755)
        elif link.read_only:  # readable by PoseHub accounts, writable by none
            _dir(link.target, 0o750, 0, owner.shared_gid)
        else:  # writable by every PoseHub account (setgid: new files keep the group)
            _dir(link.target, 0o2770, 0, owner.shared_gid)
        homefiles.ensure_symlink(home, link.path, link.target, **_ids(owner))
    entries = []
    for link in links:
        name = "home" if link.path == "home-bucket" else link.path.split("/", 1)[1]
        entries.append({"name": name, "kind": "home" if name == "home" else "shared",
                        "bucket": link.target.name if name != "home" else link.target.parent.name,
                        "prefix": f"{username}/" if name == "home" else "", "url": str(link.target),
                        "path": str(home / link.path), "mounted": True, "note": "", "read_only": link.read_only,
                        "endpoint_url": "", "region": "", "credentials": None})
    return entries


def _s3(cfg: PoseHubConfig, username: str, groups, home: Path, owner: Owner | None, logger,
        lease: s3broker.Lease | None) -> list[dict]:
    b = cfg["buckets"]
    accesses = s3plan.plan(cfg, username, groups)
    issued = datetime.now(timezone.utc)
    creds = s3creds.credentials_for(cfg, username, accesses)
    sts = next((creds[a.name] for a in accesses if a.uses_sts), None)
    renewable = lease is not None and isinstance(sts, s3creds.Credentials)
    if renewable:
        lease.set(sts, issued)
    root = mount_root(cfg, home)
    _dir(root.parent, 0o711)
    _dir(root, 0o750, 0, owner.gid) if owner else _dir(root, 0o700)
    entries = []
    for a in accesses:
        c = creds[a.name]
        usable = not isinstance(c, s3creds.CredentialsError)
        if b["mount"]["enabled"]:
            refresh = (s3broker.base_url(b["sts"]["credentials_port"]), lease.relative_uri) \
                if renewable and a.uses_sts else None
            result = mounts.mount(a, c, root, timeout=b["mount"]["timeout_seconds"], extra=b["mount"]["options"],
                                  owner=(owner.uid, owner.gid) if owner else None, refresh=refresh)
            mounted, note = result.mounted, result.reason
            homefiles.ensure_symlink(home, a.mountpoint, result.path, **_ids(owner))
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


def prepare(cfg: PoseHubConfig, username: str, groups, home: Path, logger=log, owner: Owner | None = None,
            lease: s3broker.Lease | None = None) -> dict:
    """Make the user's buckets reachable in ``home`` and write the manifest (:func:`manifest_file`); returns
    what it says. Never raises for a bucket that cannot be reached: that bucket is skipped with a note.
    With ``lease``, the server's STS credentials go into it, and the mounts ask the hub for the renewed
    ones (:mod:`posehub.hub.s3broker`)."""
    home = Path(home)
    release(cfg, home, logger)  # mounts left by a crash of an earlier run
    if cfg["buckets"]["backend"] == "local":
        entries = _local(cfg, username, groups, home, owner)
    else:
        entries = _s3(cfg, username, groups, home, owner, logger, lease)
    data = {"backend": cfg["buckets"]["backend"], "user": username, "buckets": entries}
    write_manifest(home, data, owner)
    return data


def write_manifest(home: Path, data: dict, owner: Owner | None = None) -> Path:
    """Written 0600 as the user's own file, replaced atomically: it may hold the server's credentials."""
    return homefiles.write_file(Path(home), str(MANIFEST), json.dumps(data, indent=2), mode=0o600, **_ids(owner))


def _sts_entry(entry: dict) -> bool:
    c = entry.get("credentials")
    return c == "sts" or (isinstance(c, dict) and bool(c.get("session_token")))


def with_credentials(data: dict, creds: s3creds.Credentials | None) -> dict:
    """The manifest with every STS bucket's credentials replaced by ``creds`` (None: left out, for
    keeping the manifest in the hub's database)."""
    entries = [dict(e, credentials=creds.as_dict() if creds else "sts") if _sts_entry(e) else e
               for e in data.get("buckets", [])]
    return dict(data, buckets=entries)


def release(cfg: PoseHubConfig, home: Path, logger=log) -> None:
    """Unmount every s3fs mount of this home (idempotent)."""
    for folder in (mount_root(cfg, home), Path(home)):
        for err in mounts.unmount_under(folder):
            logger.error("storage: could not unmount %s", err)
