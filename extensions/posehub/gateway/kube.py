"""Dask Gateway on Kubernetes with PoseHub's rules: the same worker profiles, limits, budget and meter as on
one machine (:class:`posehub.gateway.rules.PolicyMixin`).

:class:`PoseHubKubeBackend` is Dask Gateway's ``KubeBackend``. A cluster's config is
:func:`posehub.k8s.helm.dask_cluster_config` of its worker profile (image, resources, GPU limits, node
selector, the ``posehub.org/profile`` label), with the owner in the ``posehub.org/user`` annotation of its
pods and ``cluster_max_workers`` set to what the limits allow (the backend caps every scale request at it).

The user's running clusters are the gateway's cache of DaskCluster objects (filled by an informer, so a
cluster just made shows up a moment later), plus those this gateway made that the cache has not seen yet.

Meter, from the gateway's own records: each cluster's scheduler reports its workers to the gateway (the
heartbeat); every ``meter_interval`` seconds each worker reported active or closing is charged to the
cluster's owner at its profile's price from when it was first reported (a ``dask-worker`` span), and the spans
of workers no longer reported, or of clusters stopped, are closed. (No Kubernetes API call: the chart's
gateway role may not list pods.)

Buckets: a cluster asked from a PoseHub server carries the secret of that server's credential lease (the
cluster option ``storage_lease``, which the workspace sets as the client's default); every worker pod gets the
``posehub-storage`` sidecar with it (``posehub.k8s.podstorage``), asking the hub's endpoint, so
``posehub.storage`` and ``~/buckets`` work in workers as in the owner's server, with the same credentials,
renewed by the hub. They end when that server stops. The gateway itself holds no AWS credentials.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timezone

from dask_gateway_server.backends.kubernetes.backend import KubeBackend
from dask_gateway_server.models import ClusterStatus
from dask_gateway_server.options import String
from traitlets import Unicode

from cost_reports.reconcile import RunningServer

from ..k8s import helm, podstorage
from . import policy
from .rules import PolicyMixin


class PoseHubKubeBackend(PolicyMixin, KubeBackend):
    image_registry = Unicode("", config=True,
                             help="Registry of PoseHub's images (as `posehub k8s render --registry`), for images "
                                  "without images.<name>.registry_image")
    image_tag = Unicode("", config=True, help="Tag of PoseHub's images (as `posehub k8s render --tag`)")

    async def setup(self, app):
        self.setup_policy()
        self.setup_records()
        await super().setup(app)
        self.start_meter()

    def setup_records(self) -> None:
        """PoseHub's own records beside the KubeBackend's cache."""
        self._unsynced: dict[str, dict[str, policy.Running]] = {}  # user -> clusters made, not yet in the cache
        self._made: policy.Running | None = None
        self._workers: dict[str, dict[str, datetime]] = {}  # cluster -> {worker: first reported}
        self._setup_at = time.monotonic()

    async def cleanup(self):
        self.stop_meter()
        await super().cleanup()

    # ------------------------------------------------------------ limits (PolicyMixin's rules)

    def _running(self, username: str) -> list[policy.Running]:
        """The user's clusters in the cache (pending or running, as ``list_clusters``) and those made since."""
        cached = [c for c in self.username_to_clusters.get(username, {}).values()
                  if c.status <= ClusterStatus.RUNNING]
        made = [r for name, r in self._unsynced.get(username, {}).items() if name not in self.clusters]
        return self.as_running(cached) + made

    def cluster_config(self, profile: dict, workers: int, user, options) -> dict:
        conf = helm.dask_cluster_config(self.posehub, profile, registry=self.image_registry, tag=self.image_tag)
        owner = {helm.USER_ANNOTATION: user.name}
        conf.update(cluster_max_workers=workers, worker_extra_pod_annotations=dict(owner),
                    scheduler_extra_pod_annotations=dict(owner))
        return self.with_storage(conf, user, options.get(podstorage.LEASE_OPTION) or "")

    def make_cluster_object(self, username, options, config):
        obj = super().make_cluster_object(username, options, config)
        self._made = policy.Running(f"{config.namespace}.{obj['metadata']['name']}", options.get("profile", ""),
                                    int(config.cluster_max_workers or 0))
        return obj

    def cluster_created(self, name: str, user) -> None:
        """Counted from now on, until the cache has it (``make_cluster_object`` ran in this start, under the lock)."""
        made, self._made = self._made, None
        if made is not None and made.name == name and name not in self.clusters:  # (the watch may be first)
            self._unsynced.setdefault(user.name, {})[name] = made
        self.log.info("cluster %s of %s: %s, up to %s workers", name, user.name,
                      made.profile if made else "?", made.max_workers if made else "?")

    async def sync_cluster(self, cluster_name):
        await super().sync_cluster(cluster_name)
        for user in list(self._unsynced):
            self._unsynced[user].pop(cluster_name, None)
            if not self._unsynced[user]:
                del self._unsynced[user]

    # ------------------------------------------------------------ the owner's buckets in the workers

    def extra_fields(self) -> list:
        """The cluster option ``storage_lease``: the secret of the credential lease of the server the cluster is
        asked from (its workspace sets it as the client's default option, ``posehub.k8s.podstorage``)."""
        return [String(podstorage.LEASE_OPTION, label="Storage lease (set by PoseHub)")]

    def with_storage(self, conf: dict, user, secret: str) -> dict:
        """Worker pods with the owner's ``posehub-storage`` sidecar on the server's lease, its volumes, and the
        workspace's view of them (``$POSEHUB_STORAGE``, ``~/buckets``, ``~/home-bucket``), as in the server's pod.
        The secret gets nothing but its owner's own credentials, which the server already holds."""
        if not secret:  # no buckets, or asked from outside a PoseHub server: workers without storage
            return conf
        if not podstorage.valid_secret(secret):
            raise policy.Refused(f"{podstorage.LEASE_OPTION}: not a storage lease (leave the option as your "
                                 "server sets it)")
        pieces = podstorage.pod_pieces(self.posehub, user.name, user.groups,
                                       image=os.environ.get(podstorage.SIDECAR_IMAGE_ENV, ""),
                                       endpoint=os.environ.get(podstorage.CREDENTIALS_URL_ENV, ""), secret=secret)
        if pieces is None:
            return conf
        pod = conf.setdefault("worker_extra_pod_config", {})
        pod.setdefault("containers", []).extend(pieces["containers"])
        pod.setdefault("volumes", []).extend(pieces["volumes"])
        container = conf.setdefault("worker_extra_container_config", {})
        container.setdefault("volumeMounts", []).extend(pieces["volume_mounts"])
        conf["environment"] = {**conf.get("environment", {}), **pieces["env"]}
        # admitted by the hub's network policy, whose credential endpoint the sidecar asks
        conf["worker_extra_pod_labels"] = {**conf.get("worker_extra_pod_labels", {}), **helm.SINGLEUSER_LABELS}
        return conf

    # ------------------------------------------------------------ metering, from the gateway's own records

    async def on_cluster_heartbeat(self, cluster_name, msg):
        """The scheduler's report (every ``cluster_heartbeat_period`` s) is the gateway's record of its workers:
        each one active or closing is running since it was first reported."""
        now = datetime.now(timezone.utc)
        alive = set(msg.get("active_workers") or ()) | set(msg.get("closing_workers") or ())
        seen = self._workers.setdefault(cluster_name, {})
        for worker in alive:
            seen.setdefault(worker, now)
        for worker in [w for w in seen if w not in alive]:
            del seen[worker]
        await super().on_cluster_heartbeat(cluster_name, msg)

    def charged_workers(self) -> dict[str, dict[str, RunningServer]]:
        """``{user: {resource id: RunningServer}}`` of the workers reported by clusters still pending or running."""
        running: dict[str, dict[str, RunningServer]] = {}
        for name, workers in list(self._workers.items()):
            cluster = self.clusters.get(name)
            if cluster is None or cluster.status > ClusterStatus.RUNNING:
                self._workers.pop(name, None)
                continue
            slug = cluster.options.get("profile", "")
            for worker, since in workers.items():
                charged = self.running_worker(slug, since)
                if charged is None:
                    self.log.warning("meter: worker %s of %s: unknown worker profile %r", worker, name, slug)
                    continue
                running.setdefault(cluster.username, {})[policy.worker_resource_id(name, worker)] = charged
        return running

    def heard_from_all(self) -> bool:
        """After a (re)start, the workers are known once every running cluster has reported (or two report
        periods have passed): until then, a round would close the spans of workers still running."""
        waited = time.monotonic() - self._setup_at
        quiet = [n for n, c in self.clusters.items() if c.status == ClusterStatus.RUNNING and n not in self._workers]
        return not quiet or waited > 2 * self.cluster_heartbeat_period

    async def meter_round(self) -> None:
        if not self.heard_from_all():
            return
        await asyncio.to_thread(self.reconcile_workers, self.charged_workers(), {})  # a worker gone: closed now
