"""What is under a watched prefix: local bucket folders walked, S3 prefixes listed with ListObjectsV2.

The service lists as the owner would: S3 with the owner's own short-lived credentials (the session
policy of :mod:`posehub.hub.s3plan`, so S3 itself refuses a prefix the owner may not read); local
buckets in the folders the owner's workspace links to (:func:`posehub.hub.buckets.local_layout`),
never following a symbolic link (a link planted in a bucket cannot make the service read, and hash,
somebody else's file).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from ..config import PoseHubConfig
from ..hub import buckets, s3creds, s3plan
from .policy import Bucket, Found, is_video


class SourceError(RuntimeError):
    """A prefix that cannot be listed now (endpoint down, credentials refused): the sentence says why."""


def user_buckets(cfg: PoseHubConfig, user: str, groups) -> list[Bucket]:
    return [Bucket(a.name, a.bucket, a.prefix, a.read_only) for a in s3plan.plan(cfg, user, groups)]


def access(cfg: PoseHubConfig, user: str, groups, name: str) -> s3plan.BucketAccess:
    for a in s3plan.plan(cfg, user, groups):
        if a.name == name:
            return a
    raise SourceError(f"{user} may no longer use bucket {name!r}")


def local_folder(cfg: PoseHubConfig, user: str, groups, name: str) -> Path:
    """The folder standing for bucket ``name`` as ``user`` sees it (``backend: local``)."""
    links = {("home" if link.path == "home-bucket" else link.path.split("/", 1)[1]): link.target
             for link in buckets.local_layout(cfg, user, groups)}
    if name not in links:
        raise SourceError(f"{user} may no longer use bucket {name!r}")
    return Path(links[name])


def _md5(name: str, dir_fd: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_prefix(folder: Path, prefix: str) -> int | None:
    """A descriptor of ``folder/prefix``, reached one folder at a time without following a link (a folder
    swapped for a link while the service looks is refused, not followed); None when not there."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        fd = os.open(folder, flags)
    except OSError:
        return None
    for part in [p for p in prefix.split("/") if p]:
        try:
            nfd = os.open(part, flags, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nfd
    return fd


def list_local(folder: Path, prefix: str, hashed: dict, suffixes) -> list[Found]:
    """Regular video files under ``folder/prefix``, keys relative to ``folder``; a file's MD5 is taken
    from ``hashed`` ({(key, size, mtime): etag}) when its size and time are unchanged. Walked through folder
    descriptors (``os.fwalk``), never following a link."""
    out: list[Found] = []
    top = _open_prefix(folder, prefix)
    if top is None:
        return out
    try:
        for dirpath, dirnames, filenames, dfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = "" if dirpath == "." else dirpath[2:] + "/"
            for name in filenames:
                key = prefix + rel + name
                if not is_video(key, suffixes):
                    continue
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                        continue
                    etag = hashed.get((key, st.st_size, st.st_mtime)) or _md5(name, dfd)
                except OSError:
                    continue  # gone, changing, or swapped for a link: next round
                out.append(Found(key, etag, st.st_size, st.st_mtime))
    finally:
        os.close(top)
    return out


def s3_client(cfg: PoseHubConfig, user: str, acc: s3plan.BucketAccess):
    import boto3
    from botocore.config import Config

    creds = s3creds.credentials_for(cfg, user, [acc])[acc.name]
    if isinstance(creds, s3creds.CredentialsError):
        raise SourceError(str(creds))
    timeout = cfg["buckets"]["mount"]["timeout_seconds"]
    return boto3.session.Session(aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key,
                                 aws_session_token=creds.session_token or None, region_name=acc.region).client(
        "s3", endpoint_url=acc.endpoint_url or None,
        config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2}))


def list_s3(client, acc: s3plan.BucketAccess, prefix: str, suffixes) -> list[Found]:
    """Objects under ``prefix`` (keys relative to the user's view of the bucket), with ListObjectsV2."""
    from botocore.exceptions import BotoCoreError, ClientError

    out = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=acc.bucket, Prefix=acc.prefix + prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(acc.prefix):]
                if is_video(key, suffixes) and obj["Size"] > 0:
                    out.append(Found(key, obj["ETag"].strip('"'), int(obj["Size"])))
    except ClientError as e:
        err = e.response.get("Error", {})
        raise SourceError(f"s3://{acc.bucket}/{acc.prefix}{prefix} cannot be listed "
                          f"({err.get('Code', '?')}: {err.get('Message', '')})") from None
    except BotoCoreError as e:
        raise SourceError(f"s3://{acc.bucket}/{acc.prefix}{prefix} cannot be listed: {e}") from None
    return out
