"""One server's S3 credential lease on Kubernetes: issued, renewed, ended, restored after a hub restart.

The hub pod issues one per server (``posehub.k8s.spawner``); the Dask clusters asked from that server share it
(``posehub.gateway.kube``). It is what one machine's spawner does for a server: STS credentials
for the user's buckets (the issuer's role assumes the users' role with the session policy), registered at the
issuer's credential endpoint under a new secret (:mod:`posehub.hub.s3broker`, served on the pod network),
renewed before they end for as long as the lease lives. The secret goes to the pod's ``posehub-storage``
sidecar only (:mod:`posehub.k8s.podstorage`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime, timezone

from ..config import PoseHubConfig
from ..hub import s3broker, s3creds
from . import podstorage

log = logging.getLogger("posehub.k8s.leases")
ALL_ADDRESSES = "0.0.0.0"  # noqa: S104 - the pod network; network policies and the lease's secret guard it


class PodLease:
    """The lease of ``user`` (planned with ``groups``), renewed while :meth:`start_renewal` runs."""

    def __init__(self, cfg: PoseHubConfig, user: str, groups, lease: s3broker.Lease, logger=log):
        self.cfg, self.user, self.groups, self.lease, self.log = cfg, user, sorted(groups), lease, logger
        self._renewal: asyncio.Future | None = None

    @classmethod
    async def issue(cls, cfg: PoseHubConfig, user: str, groups, logger=log) -> PodLease | None:
        """A new lease with its first credentials (None: the user has no buckets). STS refusing is logged, not
        raised: the pod starts, the sidecar waits, renewal keeps asking (as on one machine)."""
        if not podstorage.accesses(cfg, user, groups):
            return None
        s3broker.serve(cfg["buckets"]["sts"]["credentials_port"], ALL_ADDRESSES)
        self = cls(cfg, user, groups, s3broker.Lease(user, role_arn=cfg["buckets"]["sts"]["role_arn"]), logger)
        issued = datetime.now(timezone.utc)
        try:
            self.lease.set(await asyncio.to_thread(self.fetch), issued)
        except s3creds.CredentialsError as e:
            logger.error("storage of %s: %s; the pod starts, its buckets once STS answers", user, e)
        s3broker.register(self.lease)
        return self

    @classmethod
    def restore(cls, cfg: PoseHubConfig, user: str, groups, digest: str, logger=log) -> PodLease:
        """The lease of a server that outlived a hub restart (by its secret's digest, all the hub keeps); it
        answers again once renewed (:meth:`start_renewal`)."""
        lease = s3broker.Lease(user, role_arn=cfg["buckets"]["sts"]["role_arn"], secret="", digest=digest)
        s3broker.register(lease)
        return cls(cfg, user, groups, lease, logger)

    def pieces(self) -> dict:
        """The sidecar, volumes, mounts and environment of the server's pod (``posehub.k8s.podstorage``); the
        sidecar's image and the endpoint's address are the hub pod's environment's."""
        return podstorage.pod_pieces(self.cfg, self.user, self.groups,
                                     image=os.environ.get(podstorage.SIDECAR_IMAGE_ENV, ""),
                                     endpoint=os.environ.get(podstorage.CREDENTIALS_URL_ENV, ""),
                                     secret=self.lease.secret, server=True)

    def fetch(self) -> s3creds.Credentials:
        """New STS credentials for the buckets planned at the start (blocking)."""
        accesses = podstorage.accesses(self.cfg, self.user, self.groups)
        return s3creds.assume_role(self.cfg, self.user, accesses, self.cfg["buckets"]["mount"]["timeout_seconds"])

    def start_renewal(self) -> None:
        """Renew before each end (on the running event loop; the sidecar asks the endpoint, nothing to publish)."""
        if self._renewal is None:
            s3broker.serve(self.cfg["buckets"]["sts"]["credentials_port"], ALL_ADDRESSES)
            self._renewal = asyncio.ensure_future(
                s3broker.keep_renewed(self.lease, self.fetch, lambda _creds: None, self.log))

    @property
    def renewing(self) -> bool:
        return self._renewal is not None

    def end(self) -> None:
        """Stop renewing; the endpoint no longer answers the secret."""
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        s3broker.unregister(self.lease)
