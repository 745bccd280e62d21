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


def md5_of(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_local(folder: Path, prefix: str, hashed: dict, suffixes) -> list[Found]:
    """Regular video files under ``folder/prefix``, keys relative to ``folder``; a file's MD5 is taken
    from ``hashed`` ({(key, size, mtime): etag}) when its size and time are unchanged."""
    top = folder / prefix
    out = []
    step = folder
    for part in [""] + prefix.strip("/").split("/"):
        step = step / part if part else step
        if step.is_symlink() or not step.is_dir():
            return out  # not there yet, or a link: never followed
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            key = path.relative_to(folder).as_posix()
            if not is_video(key, suffixes):
                continue
            try:
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                    continue
                etag = hashed.get((key, st.st_size, st.st_mtime)) or md5_of(path)
            except OSError:
                continue  # gone or changing: next round
            out.append(Found(key, etag, st.st_size, st.st_mtime))
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
