"""Each running server's STS credentials, renewed before they end, and the hub's endpoint that
hands them to the server's s3fs mounts.

Python in the server (and its Dask workers) re-reads the credentials from the manifest the hub
rewrites (:mod:`posehub.storage`). s3fs-fuse (1.90 in Debian 12) reads its keys once, unless it
takes them from an ECS-style credential endpoint, which it asks again once its set is within 20
minutes of its end. The hub is that endpoint: mounts run ``s3fs -o ecs,ibm_iam_endpoint=<url>``,
where ``ecs`` makes s3fs GET ``<endpoint>/identity/token`` + ``$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``
and the ``ibm_iam_endpoint`` after it moves the endpoint from 169.254.170.2 to the hub, on loopback
(the order matters; s3fs 1.90 to 1.95 parse it this way). The relative URI is ``?token=<secret>``:
a random secret per server, given only to the root-owned s3fs processes in their environment
(never on a command line). Only its SHA-256 is kept (in the spawner's state, for hub restarts), so
neither the hub's database nor its API reveals it. The endpoint listens on 127.0.0.1 only and
refuses anything that came through a proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from tornado import httpserver, web

from ..config import is_loopback
from . import s3lease
from .s3creds import Credentials
from .s3plan import S3FS_CREDENTIALS_PATH

log = logging.getLogger("posehub.s3broker")


class BrokerError(Exception):
    """The credential endpoint cannot be served; the message says why and what to change."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Lease:
    """One running server's STS credentials, as its mounts get them from the hub."""

    user: str
    role_arn: str = ""
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    credentials: Credentials | None = None
    issued: datetime | None = None
    digest: str = ""  # SHA-256 of the secret: all the hub keeps (a lease restored after a restart has no secret)

    def __post_init__(self):
        if not self.digest:
            self.digest = _digest(self.secret)

    @property
    def relative_uri(self) -> str:
        """What s3fs appends to the endpoint (``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``)."""
        return f"?token={self.secret}"

    @property
    def expires(self) -> datetime | None:
        if self.credentials is None or not self.credentials.expiration:
            return None
        return s3lease.parse_time(self.credentials.expiration)

    def set(self, credentials: Credentials, issued: datetime) -> None:
        self.credentials, self.issued = credentials, issued

    def renew_at(self) -> datetime | None:
        """When to renew (None: there is nothing to renew yet, renew now)."""
        if self.expires is None or self.issued is None:
            return None
        return s3lease.renew_at(self.issued, self.expires)

    def document(self, now: datetime) -> dict | None:
        """The credentials in the ECS endpoint's format, or None when there are none that are still valid."""
        c, ends = self.credentials, self.expires
        if c is None or ends is None or ends <= now:
            return None
        return {"AccessKeyId": c.access_key_id, "SecretAccessKey": c.secret_access_key, "Token": c.session_token,
                "Expiration": ends.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "RoleArn": self.role_arn or "arn:aws:iam::000000000000:role/posehub"}


_leases: dict[str, Lease] = {}  # by the SHA-256 of the secret
_servers: dict[int, httpserver.HTTPServer] = {}


def register(lease: Lease) -> None:
    _leases[lease.digest] = lease


def unregister(lease: Lease) -> None:
    _leases.pop(lease.digest, None)


def lookup(secret: str) -> Lease | None:
    return _leases.get(_digest(secret)) if secret else None


class CredentialsHandler(web.RequestHandler):
    def get(self):
        # nothing forwarded by a proxy; on one machine, s3fs on this machine only (on Kubernetes, pods' sidecars:
        # the network policy admits the servers' and Dask pods, and a lease's secret is what counts)
        remote_ok = self.settings.get("posehub_remote", False)
        if "X-Forwarded-For" in self.request.headers or not (remote_ok or is_loopback(self.request.remote_ip or "")):
            raise web.HTTPError(404)
        lease = lookup(self.get_query_argument("token", ""))
        if lease is None:
            raise web.HTTPError(403)
        doc = lease.document(_now())
        if doc is None:
            raise web.HTTPError(503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc))

    def write_error(self, status_code, **kwargs):
        self.finish({403: "unknown credentials", 404: "not found",
                     503: "these credentials are being renewed; ask again shortly"}.get(status_code, "error"))


def _log_request(handler: web.RequestHandler) -> None:
    """Never the URI (it holds the secret); refusals only."""
    status = handler.get_status()
    if status >= 400:
        log.warning("S3 credential endpoint: %s for a request from %s", status, handler.request.remote_ip)


def base_url(port: int) -> str:
    """What the mounts' ``ibm_iam_endpoint`` is."""
    return f"http://127.0.0.1:{port}"


def serve(port: int, address: str = "127.0.0.1") -> str:
    """Serve the endpoint on ``address``:``port`` in this process (once; call it on the event loop): loopback on
    one machine; every address in a Kubernetes pod (the hub's, the gateway's), for the sidecars of other pods."""
    if port not in _servers:
        app = web.Application([(S3FS_CREDENTIALS_PATH, CredentialsHandler)], log_function=_log_request,
                              posehub_remote=not is_loopback(address))
        server = httpserver.HTTPServer(app)
        try:
            server.listen(port, address)
        except OSError as e:
            raise BrokerError(f"the S3 credential endpoint cannot listen on {address}:{port} ({e.strerror}): "
                              "set buckets.sts.credentials_port to a free port") from None
        _servers[port] = server
    return base_url(port)


async def keep_renewed(lease: Lease, fetch: Callable[[], Credentials], publish: Callable[[Credentials], None],
                       logger=log, *, now: Callable[[], datetime] = _now, sleep=asyncio.sleep) -> None:
    """Renew ``lease`` before each end for as long as this runs (cancel it when the server stops).
    ``fetch`` (new credentials from STS) and ``publish`` (the server's manifest rewritten) block:
    they run in threads. What fails is tried again, more often as the end nears."""
    unpublished: Credentials | None = None
    while True:
        t = now()
        if unpublished is not None:
            try:
                await asyncio.to_thread(publish, unpublished)
                unpublished = None
            except Exception as e:  # noqa: BLE001 - the mounts have them; Python gets them once this works
                again = s3lease.retry_at(t, lease.expires)
                logger.error("storage of %s: the renewed S3 credentials could not be written to the manifest "
                             "(%s); trying again in %.0f s", lease.user, e, (again - t).total_seconds())
                await sleep((again - t).total_seconds())
                continue
        due = lease.renew_at()
        if due is not None and due > t:
            await sleep((due - t).total_seconds())
            continue
        try:
            creds = await asyncio.to_thread(fetch)
        except Exception as e:  # noqa: BLE001 - STS down or refusing: the current set still works until its end
            again = s3lease.retry_at(now(), lease.expires)
            ends = f"at {lease.expires:%Y-%m-%d %H:%M:%S} UTC" if lease.expires else "already"
            logger.warning("storage of %s: renewing the S3 credentials failed (%s); the current ones end %s; "
                           "trying again in %.0f s", lease.user, e, ends, (again - now()).total_seconds())
            await sleep(max(0.0, (again - now()).total_seconds()))
            continue
        lease.set(creds, issued=t)
        unpublished = creds
        logger.info("storage of %s: S3 credentials renewed, valid until %s", lease.user, creds.expiration)
