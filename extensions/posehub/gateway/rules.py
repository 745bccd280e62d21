"""PoseHub's rules for any Dask Gateway backend: the same on one machine and on Kubernetes.

:class:`PolicyMixin` goes before the gateway's backend class (``class B(PolicyMixin, LocalBackend)``). It
loads ``posehub.yaml`` and the :class:`~posehub.hub.costs.CostGate`, offers each user the worker profiles
open to them, checks a requested profile before anything is made, turns the options into the cluster
config under the limits of :func:`posehub.gateway.policy.max_workers` (a refusal is the user's sentence),
starts clusters one at a time (two requests at once cannot both pass a limit only one fits in), and runs
the meter: every ``meter_interval`` seconds the workers the backend sees are reconciled with the ledger.

A backend supplies what only it knows: :meth:`~PolicyMixin._running` (the user's clusters),
:meth:`~PolicyMixin.cluster_config` (the config of its kind), :meth:`~PolicyMixin.meter_round`, and may
refine :meth:`~PolicyMixin.check_startable`, :meth:`~PolicyMixin.gpu_room` and
:meth:`~PolicyMixin.cluster_created`.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from dask_gateway_server.backends.base import PublicException
from dask_gateway_server.options import Options, Select
from traitlets import Dict, Float, Unicode
from traitlets.config import LoggingConfigurable

from cost_reports.reconcile import ReconcileResult, RunningServer, reconcile

from ..config import load, validate
from ..hub.costs import CostGate
from . import policy

KIND = "dask-worker"  # the ledger's kind of a Dask worker's spans


class PolicyMixin(LoggingConfigurable):
    """Worker profiles, limits, the budget and the meter of PoseHub, for a Dask Gateway backend."""

    posehub_config_file = Unicode("", config=True, help="posehub.yaml (default: $POSEHUB_CONFIG or the embedded one)")
    posehub_config_data = Dict(config=True, help="posehub.yaml's content itself (Kubernetes: rendered into the "
                                                 "gateway's config), instead of posehub_config_file")
    meter_interval = Float(10.0, config=True, help="Seconds between two reconciliations of workers and the ledger")

    def setup_policy(self) -> None:
        """Load the config and the ledger's gate; called by ``setup`` before the backend's own."""
        if self.posehub_config_data:
            self.posehub = validate(copy.deepcopy(self.posehub_config_data), "<gateway config: posehub.yaml>")
        else:
            self.posehub = load(self.posehub_config_file or None)
        self.gate = CostGate(self.posehub)
        self.cluster_options = self.options_for
        self._start_lock = asyncio.Lock()

    # ------------------------------------------------------------ options and limits

    def offered(self, user) -> list[dict]:
        """Worker profiles of ``user``, with admins' run-time settings (the admin page) as for servers."""
        return policy.worker_profiles(self.posehub, user.name, user.groups, user.admin, self.gate.reporter.profiles())

    def options_for(self, user) -> Options:
        offered = self.offered(user)
        if not offered:
            return Options(*self.extra_fields(), handler=self.handler)
        return Options(
            Select("profile", [p["slug"] for p in offered], default=policy.default_profile(self.posehub, offered),
                   label="Worker profile"),
            *self.extra_fields(),
            handler=self.handler,
        )

    def extra_fields(self) -> list:
        """Cluster options beyond the worker profile (none by default)."""
        return []

    @staticmethod
    def as_running(clusters: Iterable) -> list[policy.Running]:
        """Gateway cluster records (``name``, ``options``, ``config``) -> what the limits count."""
        return [policy.Running(c.name, c.options.get("profile", ""), int(c.config.get("cluster_max_workers") or 0))
                for c in clusters]

    def _running(self, username: str) -> list[policy.Running]:
        """The clusters of ``username`` that count against the limits."""
        raise NotImplementedError

    def check_startable(self, profile: dict) -> None:
        """Refused if workers of ``profile`` cannot run here at all (nothing to check by default)."""

    def gpu_room(self) -> dict:
        """``free_gpus``/``machine_gpus`` of :func:`policy.max_workers`: None where the scheduler places GPUs."""
        return {"free_gpus": None}

    def cluster_config(self, profile: dict, workers: int, user, options) -> dict:
        """The ClusterConfig overrides of a cluster of ``profile`` workers, at most ``workers`` of them."""
        raise NotImplementedError

    def handler(self, options, user) -> dict:
        """Cluster options -> ClusterConfig overrides, or a Refused message (shown to the user)."""
        profile = policy.check_profile(self.posehub, options.get("profile"), self.offered(user))
        self.check_startable(profile)
        left = self.gate.remaining(user.name, user.groups)
        workers = policy.max_workers(self.posehub, profile, self._running(user.name), left.remaining,
                                     self.gate.block_hours, left.budget.total, left.period.label, **self.gpu_room())
        return self.cluster_config(profile, workers, user, options)

    def check_request(self, user, cluster_options) -> dict:
        """The requested options, or PublicException with the user's sentence for a profile not open to them
        (before the options' own check, which would only say it is not a valid choice)."""
        offered = self.offered(user)
        if not offered:
            raise PublicException(f"No worker profile is open to you: ask {self.posehub['hub']['admin_contact']}.")
        requested = dict(cluster_options or {})
        try:
            if "profile" in requested:
                policy.check_profile(self.posehub, requested["profile"], offered)
        except policy.Refused as e:
            raise PublicException(str(e)) from None
        return requested

    async def start_cluster(self, user, cluster_options):
        """The requested profile checked first (nothing is made for a refused one), then the backend's own
        start, one at a time: two clusters asked at once cannot both pass a limit only one fits in."""
        requested = self.check_request(user, cluster_options)
        async with self._start_lock:
            name = await super().start_cluster(user, requested)
            self.cluster_created(name, user)
        return name

    def cluster_created(self, name: str, user) -> None:
        """Called under the start lock once the backend has made cluster ``name``."""

    # ------------------------------------------------------------ metering

    def running_worker(self, slug: str, started: datetime | None) -> RunningServer | None:
        """A worker of profile ``slug`` as the ledger charges it (None for a profile no longer configured)."""
        profile = self.posehub.profile(slug)
        if profile is None:
            return None
        return RunningServer(started=started, profile=profile["slug"],
                             price_per_hour=Decimal(str(profile["price_per_hour"])))

    def reconcile_workers(self, running: Mapping[str, Mapping[str, RunningServer]],
                          stopped: Mapping[str, Mapping[str, datetime]]) -> ReconcileResult:
        """``{user: {resource id: RunningServer}}`` and the stop times of those gone -> the ledger's
        ``dask-worker`` spans: missing ones opened, those of workers gone closed."""
        result = reconcile(self.gate.ledger, running, stopped_at=stopped, kind=KIND)
        for span in result.opened:
            self.log.info("meter: %s's worker %s costs from %s", span.user, span.resource_id, span.start)
        for span in result.closed:
            self.log.info("meter: %s's worker %s stopped at %s", span.user, span.resource_id, span.end)
        return result

    async def meter_round(self) -> None:
        """One reconciliation of the workers with the ledger."""
        raise NotImplementedError

    def start_meter(self) -> None:
        self._meter_task = asyncio.ensure_future(self._meter_loop())

    def stop_meter(self) -> None:
        task = getattr(self, "_meter_task", None)
        if task is not None:
            task.cancel()

    async def _meter_loop(self):
        while True:
            try:
                await self.meter_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the ledger or the API may be busy; the next round catches up
                self.log.exception("meter: could not reconcile workers with the ledger")
            await asyncio.sleep(self.meter_interval)
