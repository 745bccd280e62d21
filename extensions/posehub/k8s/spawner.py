"""KubeSpawner with the user's buckets: the hub pod's spawner (``hub.extraConfig`` sets it, ``posehub.k8s.hubpod``).

Before a server starts (:meth:`PoseHubKubeSpawner.prepare_storage`, from the pre-spawn hook once the budget
check has passed) the hub plans the user's buckets as on one machine, fetches the server's own STS
credentials (the hub's IRSA role assumes the users' role with the session policy of
:func:`posehub.hub.s3plan.session_policy`), registers a lease with a new secret at the hub's credential
endpoint (served on the pod network, port ``buckets.sts.credentials_port``), and adds the
``posehub-storage`` sidecar, its volumes and ``$POSEHUB_STORAGE`` to the pod (:mod:`posehub.k8s.podstorage`).
While the server runs the hub renews the credentials before they end; the sidecar picks them up. Only the
secret's SHA-256 is kept in the spawner's state, so after a hub restart the lease answers again (the
sidecar still has the secret) and renewal resumes from ``poll()``. Stopping the server ends the lease.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

from kubespawner import KubeSpawner
from traitlets import Dict, Unicode

from ..config import PoseHubConfig, load
from ..hub import s3broker, s3creds
from . import podstorage
from .hubpod import template_literal

_configs: dict[str, PoseHubConfig] = {}


def posehub_config(path: str = "") -> PoseHubConfig:
    """posehub.yaml of the hub pod ($POSEHUB_CONFIG), loaded once."""
    key = path or os.environ.get("POSEHUB_CONFIG", "")
    if key not in _configs:
        _configs[key] = load(key or None)
    return _configs[key]


def _merged(current: list, added: list, key: str = "name") -> list:
    """``current`` with ``added``, replacing entries of the same name (a restarted server's, from its last start)."""
    names = {a[key] for a in added}
    return [x for x in (current or []) if (x.get(key) if isinstance(x, dict) else None) not in names] + added


class PoseHubKubeSpawner(KubeSpawner):
    posehub_config_file = Unicode("", config=True, help="posehub.yaml (default: $POSEHUB_CONFIG)")
    storage_state = Dict(help="The running server's credential lease (its secret's SHA-256, the groups it was "
                              "planned for), kept across hub restarts.")

    _lease: s3broker.Lease | None = None
    _renewal: asyncio.Future | None = None

    @property
    def posehub(self) -> PoseHubConfig:
        return posehub_config(self.posehub_config_file)

    # ------------------------------------------------------------ storage of a new server

    async def prepare_storage(self) -> None:
        """The sidecar, volumes and environment of the user's buckets, and the lease behind them."""
        self.release_storage()
        cfg = self.posehub
        groups = sorted(g.name for g in self.user.groups)
        accesses = podstorage.accesses(cfg, self.user.name, groups)
        if not accesses:
            return
        port = cfg["buckets"]["sts"]["credentials_port"]
        s3broker.serve(port, "0.0.0.0")  # noqa: S104 - the pod network; the network policy admits user pods only
        lease = s3broker.Lease(self.user.name, role_arn=cfg["buckets"]["sts"]["role_arn"])
        issued = datetime.now(timezone.utc)
        try:
            creds = await asyncio.to_thread(s3creds.assume_role, cfg, self.user.name, accesses,
                                            cfg["buckets"]["mount"]["timeout_seconds"])
            lease.set(creds, issued)
        except s3creds.CredentialsError as e:  # the sidecar waits; renewal keeps trying (as on one machine)
            self.log.error("storage of %s: %s; the server starts, its buckets once STS answers", self.user.name, e)
        pieces = template_literal(podstorage.pod_pieces(
            cfg, self.user.name, groups, image=os.environ.get(podstorage.SIDECAR_IMAGE_ENV, ""),
            endpoint=os.environ.get(podstorage.CREDENTIALS_URL_ENV, ""), secret=lease.secret))
        s3broker.register(lease)
        self._lease = lease
        self.storage_state = {"digest": lease.digest, "groups": groups}
        self.extra_containers = _merged(self.extra_containers, pieces["containers"])
        self.volumes = _merged(self.volumes, pieces["volumes"])
        self.volume_mounts = _merged(self.volume_mounts, pieces["volume_mounts"])
        env = self.environment if isinstance(self.environment, dict) else {}
        self.environment = {**env, **pieces["env"]}
        self._start_renewal()

    def _fetch_credentials(self) -> s3creds.Credentials:
        """New STS credentials for the buckets the server was started with (in a thread)."""
        cfg = self.posehub
        accesses = podstorage.accesses(cfg, self.user.name, self.storage_state.get("groups", []))
        return s3creds.assume_role(cfg, self.user.name, accesses, cfg["buckets"]["mount"]["timeout_seconds"])

    def _start_renewal(self) -> None:
        if self._lease is not None and self._renewal is None:
            # nothing to publish: the sidecar asks the endpoint
            self._renewal = asyncio.ensure_future(
                s3broker.keep_renewed(self._lease, self._fetch_credentials, lambda _creds: None, self.log))

    def release_storage(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if self._lease is not None:
            s3broker.unregister(self._lease)
            self._lease = None
        self.storage_state = {}

    async def stop(self, now=False):
        try:
            return await super().stop(now=now)
        finally:
            self.release_storage()

    async def poll(self):
        status = await super().poll()
        if status is not None:
            self.release_storage()
        elif self._lease is not None and self._renewal is None:  # running after a hub restart
            s3broker.serve(self.posehub["buckets"]["sts"]["credentials_port"], "0.0.0.0")  # noqa: S104
            self._start_renewal()
        return status

    # ------------------------------------------------------------ state across hub restarts

    def get_state(self):
        state = super().get_state()
        if self.storage_state:
            state["storage"] = dict(self.storage_state)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.storage_state = dict(state.get("storage", {}))
        if self.storage_state.get("digest") and self._lease is None:
            self._lease = s3broker.Lease(self.user.name, role_arn=self.posehub["buckets"]["sts"]["role_arn"],
                                         secret="", digest=self.storage_state["digest"])
            s3broker.register(self._lease)  # the sidecar's secret answers again once poll() has renewed it

    def clear_state(self):
        super().clear_state()
        self.release_storage()
