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

import os

from kubespawner import KubeSpawner
from traitlets import Dict, Float, Unicode

from .. import culling
from ..config import PoseHubConfig, load
from .hubpod import template_literal
from .leases import PodLease

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

    profile_slug = Unicode("", help="The profile the server started with (set by the pre-spawn hook).")
    idle_limit_seconds = Float(0, help="Its idle limit when it started (admins' setting included): the culler's.")

    _lease: PodLease | None = None

    @property
    def posehub(self) -> PoseHubConfig:
        return posehub_config(self.posehub_config_file)

    async def prepare_storage(self) -> None:
        """The sidecar, volumes and environment of the user's buckets, and the lease behind them."""
        self.release_storage()
        groups = sorted(g.name for g in self.user.groups)
        lease = await PodLease.issue(self.posehub, self.user.name, groups, self.log)
        if lease is None:
            return
        self._lease = lease
        self.storage_state = {"digest": lease.lease.digest, "groups": lease.groups}
        pieces = template_literal(lease.pieces())
        self.extra_containers = _merged(self.extra_containers, pieces["containers"])
        self.volumes = _merged(self.volumes, pieces["volumes"])
        self.volume_mounts = _merged(self.volume_mounts, pieces["volume_mounts"])
        env = self.environment if isinstance(self.environment, dict) else {}
        self.environment = {**env, **pieces["env"]}
        lease.start_renewal()

    def release_storage(self) -> None:
        if self._lease is not None:
            self._lease.end()
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
        elif self._lease is not None and not self._lease.renewing:  # running after a hub restart
            self._lease.start_renewal()
        return status

    # ------------------------------------------------------------ state across hub restarts

    def get_state(self):
        state = super().get_state()
        state.update(culling.state_of(self.profile_slug, self.idle_limit_seconds))  # the culler's arbiter reads it
        if self.storage_state:
            state["storage"] = dict(self.storage_state)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.profile_slug, self.idle_limit_seconds = culling.from_state(state)
        self.storage_state = dict(state.get("storage", {}))
        if self.storage_state.get("digest") and self._lease is None:
            # the sidecar's secret answers again once poll() has renewed the credentials
            self._lease = PodLease.restore(self.posehub, self.user.name, self.storage_state.get("groups", []),
                                           self.storage_state["digest"], logger=self.log)

    def clear_state(self):
        super().clear_state()
        self.profile_slug, self.idle_limit_seconds = "", 0.0
        self.release_storage()
