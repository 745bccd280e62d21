"""What a user's workspace gets from S3, as plain data (no I/O).

:func:`plan` lists the buckets a user sees (shared buckets filtered by group,
plus their own prefix of the home bucket); :func:`session_policy` is the STS
session policy that allows exactly those and nothing more; :func:`s3fs_command`
is the s3fs-fuse command line of one mount; :func:`manifest` is what the
server is told (``~/.posehub/storage.json``, read by :mod:`posehub.storage`).
Credentials are fetched in :mod:`posehub.hub.s3creds`, mounts made in
:mod:`posehub.hub.mounts`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .buckets import visible_shared
from ..config import PoseHubConfig
from ..names import check_username

# AWS refuses session policies over 2,048 characters once packed
SESSION_POLICY_LIMIT = 2048
READ_ACTIONS = ["s3:GetObject"]
WRITE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
# s3fs's ECS credential source: it GETs <ibm_iam_endpoint> + this path + $S3FS_CREDENTIALS_ENV
# (posehub.hub.s3broker serves it)
S3FS_CREDENTIALS_PATH = "/identity/token"
S3FS_CREDENTIALS_ENV = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"


@dataclass(frozen=True)
class BucketAccess:
    """One bucket (or one prefix of the home bucket) in one user's workspace."""

    kind: str  # "shared" or "home"
    bucket: str
    prefix: str  # "" for a whole bucket, "<username>/" in the home bucket
    mountpoint: str  # relative to the user's home folder
    endpoint_url: str
    region: str
    read_only: bool
    keys_file: str = ""
    keys_env: str = ""

    @property
    def name(self) -> str:
        """How the user refers to it: the bucket's name, or "home"."""
        return "home" if self.kind == "home" else self.bucket

    @property
    def uses_sts(self) -> bool:
        return not (self.keys_file or self.keys_env)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def plan(cfg: PoseHubConfig, username: str, groups) -> list[BucketAccess]:
    b = cfg["buckets"]
    out = [
        BucketAccess("shared", x["name"], "", f"buckets/{x['name']}", x["endpoint_url"] or b["endpoint_url"],
                     x["region"] or b["region"], x["read_only"], x["keys_file"], x["keys_env"])
        for x in visible_shared(cfg, groups)
    ]
    home = b.get("home")
    if home:
        out.append(BucketAccess("home", home["name"], f"{username}/", "home-bucket",
                                home["endpoint_url"] or b["endpoint_url"], home["region"] or b["region"], False,
                                home["keys_file"], home["keys_env"]))
    return out


def _arn(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" if key is None else f"arn:aws:s3:::{bucket}/{key}"


def session_policy(accesses: list[BucketAccess]) -> dict:
    """The session policy of one server: list and read the shared buckets it sees, write those
    that are read-write, and read/write only ``<username>/`` in the home bucket."""
    sts = [a for a in accesses if a.uses_sts]
    shared = [a for a in sts if a.kind == "shared"]
    statements = []
    if shared:
        statements.append({"Sid": "ListSharedBuckets", "Effect": "Allow",
                           "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                           "Resource": [_arn(a.bucket) for a in shared]})
        statements.append({"Sid": "ReadSharedBuckets", "Effect": "Allow", "Action": READ_ACTIONS,
                           "Resource": [_arn(a.bucket, "*") for a in shared]})
        writable = [a for a in shared if not a.read_only]
        if writable:
            statements.append({"Sid": "WriteSharedBuckets", "Effect": "Allow", "Action": WRITE_ACTIONS,
                               "Resource": [_arn(a.bucket, "*") for a in writable]})
    for a in sts:
        if a.kind != "home":
            continue
        # the name goes into ARNs and a StringLike condition, where * ? $ { } would widen it: refused, never escaped
        user = check_username(a.prefix.rstrip("/"))
        statements.append({"Sid": "ListOwnHomePrefix", "Effect": "Allow", "Action": "s3:ListBucket",
                           "Resource": _arn(a.bucket),
                           "Condition": {"StringLike": {"s3:prefix": [f"{user}/", f"{user}/*"]}}})
        statements.append({"Sid": "LocateHomeBucket", "Effect": "Allow", "Action": "s3:GetBucketLocation",
                           "Resource": _arn(a.bucket)})
        statements.append({"Sid": "ReadWriteOwnHomePrefix", "Effect": "Allow",
                           "Action": READ_ACTIONS + WRITE_ACTIONS, "Resource": _arn(a.bucket, f"{user}/*")})
    return {"Version": "2012-10-17", "Statement": statements}


def packed(policy: dict) -> str:
    text = json.dumps(policy, separators=(",", ":"))
    if len(text) > SESSION_POLICY_LIMIT:
        raise ValueError(f"the session policy is {len(text)} characters, over STS's limit of "
                         f"{SESSION_POLICY_LIMIT}: give fewer shared buckets to this user's groups")
    return text


def role_session_name(username: str) -> str:
    """STS allows 2-64 characters of ``[\\w+=,.@-]``."""
    name = "posehub-" + re.sub(r"[^\w+=,.@-]", "-", username)
    return name[:64]


def s3fs_options(access: BucketAccess, timeout: float, extra: list[str], session_token: bool,
                 owner: tuple[int, int] | None = None, credentials_endpoint: str = "") -> list[str]:
    """``-o`` options of one mount: tuned for large sequential reads of video, many small files
    listed at once, and quick failure when the endpoint is down. With ``owner`` (uid, gid) the hub
    (root) mounts for that account alone: every file shows as the owner's, mode 0700/0600. With
    ``credentials_endpoint`` s3fs takes its (renewed) credentials from the hub there, not from its
    environment: ``ecs`` first, then ``ibm_iam_endpoint``, which moves ECS's address to the hub."""
    opts = [
        f"endpoint={access.region}",
        f"connect_timeout={max(1, int(timeout))}",
        f"readwrite_timeout={max(5, int(timeout) * 3)}",
        "retries=2",
        "parallel_count=4",  # reads and writes in 4 parallel parts of 64 MB (bench/s3_read.py)
        "multipart_size=64",
        "max_stat_cache_size=100000",
        "stat_cache_expire=60",
        "enable_noobj_cache",
        "mp_umask=0022",
    ]
    if access.endpoint_url:
        opts += [f"url={access.endpoint_url}", "use_path_request_style"]
    if access.read_only:
        opts.append("ro")
    if credentials_endpoint:
        opts += ["ecs", f"ibm_iam_endpoint={credentials_endpoint}"]
    elif session_token:
        opts.append("use_session_token")
    if owner is not None:
        uid, gid = owner
        opts = [o for o in opts if not o.startswith("mp_umask=")]
        opts += ["allow_other", f"uid={uid}", f"gid={gid}", "umask=0077", "mp_umask=0077"]
    return opts + list(extra)


def s3fs_command(access: BucketAccess, mountpoint: Path, *, timeout: float = 10, extra: list[str] = (),
                 session_token: bool = False, owner: tuple[int, int] | None = None,
                 credentials_endpoint: str = "") -> list[str]:
    source = access.bucket + (f":/{access.prefix.rstrip('/')}" if access.prefix else "")
    cmd = ["s3fs", source, str(mountpoint)]
    for opt in s3fs_options(access, timeout, list(extra), session_token, owner, credentials_endpoint):
        cmd += ["-o", opt]
    return cmd


def manifest_entry(access: BucketAccess, home: Path, *, mounted: bool, note: str = "",
                   credentials: dict | None = None) -> dict:
    return {
        "name": access.name, "kind": access.kind, "bucket": access.bucket, "prefix": access.prefix,
        "url": access.url, "path": str(home / access.mountpoint), "mounted": mounted, "note": note,
        "read_only": access.read_only, "endpoint_url": access.endpoint_url, "region": access.region,
        "credentials": credentials,
    }
