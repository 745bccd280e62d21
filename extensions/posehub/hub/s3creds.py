"""Credentials for a user's buckets; the hub's own keys never leave the hub.

Buckets with static keys (``keys_file``/``keys_env``) use them. The others get
one set of short-lived credentials per server from STS AssumeRole, limited by
the session policy of :func:`posehub.hub.s3plan.session_policy`. The hub's own keys
(``buckets.hub_keys_file``, else boto3's usual chain) are used only for that
call.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from ..config import PoseHubConfig
from .s3plan import BucketAccess, packed, role_session_name, session_policy


class CredentialsError(Exception):
    """Credentials that cannot be had; the message says which and why."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str = ""
    expiration: str = ""  # ISO time, for STS credentials

    def as_env(self) -> dict:
        env = {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        if self.session_token:
            env["AWS_SESSION_TOKEN"] = self.session_token
        return env

    def as_dict(self) -> dict:
        return asdict(self)


def read_keys_file(path: str | Path, what: str) -> Credentials:
    """A file holding ``ACCESS_KEY_ID:SECRET_ACCESS_KEY`` (s3fs's passwd format)."""
    try:
        text = Path(path).expanduser().read_text().strip()
    except OSError as e:
        raise CredentialsError(f"{what}: cannot read keys file {path} ({e.strerror})") from None
    key, sep, secret = text.partition(":")
    if not sep or not key or not secret or "\n" in text:
        raise CredentialsError(f"{what}: keys file {path} must hold one line ACCESS_KEY_ID:SECRET_ACCESS_KEY")
    return Credentials(key.strip(), secret.strip())


def read_keys_env(prefix: str, what: str, environ=os.environ) -> Credentials:
    key, secret = environ.get(f"{prefix}_ACCESS_KEY_ID"), environ.get(f"{prefix}_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise CredentialsError(f"{what}: {prefix}_ACCESS_KEY_ID and {prefix}_SECRET_ACCESS_KEY must both be set "
                               "in the hub's environment")
    return Credentials(key, secret)


def static_keys(access: BucketAccess, environ=os.environ) -> Credentials:
    what = f"bucket '{access.bucket}'"
    if access.keys_file:
        return read_keys_file(access.keys_file, what)
    return read_keys_env(access.keys_env, what, environ)


def hub_session(cfg: PoseHubConfig):
    import boto3

    keys_file = cfg["buckets"]["hub_keys_file"]
    if keys_file:
        k = read_keys_file(cfg.resolve(keys_file), "buckets.hub_keys_file")
        return boto3.session.Session(aws_access_key_id=k.access_key_id, aws_secret_access_key=k.secret_access_key,
                                     region_name=cfg["buckets"]["region"])
    return boto3.session.Session(region_name=cfg["buckets"]["region"])


def assume_role(cfg: PoseHubConfig, username: str, accesses: list[BucketAccess], timeout: float = 10) -> Credentials:
    """Short-lived credentials for one server, limited to ``accesses`` by a session policy."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    sts_cfg = cfg["buckets"]["sts"]
    endpoint = sts_cfg["endpoint_url"] or cfg["buckets"]["endpoint_url"] or None
    try:
        policy = packed(session_policy(accesses))
        client = hub_session(cfg).client(
            "sts", endpoint_url=endpoint,
            config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2}))
        out = client.assume_role(RoleArn=sts_cfg["role_arn"], RoleSessionName=role_session_name(username),
                                 Policy=policy, DurationSeconds=sts_cfg["duration_seconds"])
    except ValueError as e:
        raise CredentialsError(str(e)) from None
    except ClientError as e:
        err = e.response.get("Error", {})
        raise CredentialsError(f"STS refused to issue credentials for {username} "
                               f"({err.get('Code', '?')}: {err.get('Message', '')})") from None
    except BotoCoreError as e:
        raise CredentialsError(f"STS at {endpoint or 'AWS'} could not be reached: {e}") from None
    c = out["Credentials"]
    expiration = c["Expiration"]
    return Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"],
                       expiration.isoformat() if isinstance(expiration, datetime) else str(expiration))


def credentials_for(cfg: PoseHubConfig, username: str, accesses: list[BucketAccess],
                    environ=os.environ) -> dict[str, Credentials | CredentialsError]:
    """``{access.name: Credentials or the error}``; one STS call covers every bucket without static keys."""
    out: dict[str, Credentials | CredentialsError] = {}
    sts = [a for a in accesses if a.uses_sts]
    if sts:
        try:
            creds: Credentials | CredentialsError = assume_role(cfg, username, sts,
                                                                cfg["buckets"]["mount"]["timeout_seconds"])
        except CredentialsError as e:
            creds = e
        for a in sts:
            out[a.name] = creds
    for a in accesses:
        if not a.uses_sts:
            try:
                out[a.name] = static_keys(a, environ)
            except CredentialsError as e:
                out[a.name] = e
    return out
