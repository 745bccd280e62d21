"""Enforcement while work runs: warn at 80 % and 95 %, stop everything at 100 %.

:func:`level_for` and :func:`message_for` are pure; :class:`Enforcer` runs one
round (:meth:`Enforcer.tick`) of the loop the service repeats every
``costs.check_interval_seconds``:

1. reconcile the ledger with the servers the hub reports (crash recovery:
   spans of servers that are gone are closed, running servers without a span
   get one);
2. measure each user's home prefix and keep its storage span up to date;
3. compare each user's spend with their budget: record a warning once per
   level and period, and at 100 % stop the user's servers through the hub's
   REST API and their Dask clusters through Dask Gateway (the clusters with
   workers in the ledger: ``dask-worker`` spans, metered by the gateway), with
   a notice saying why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from .core import CostReporter
from .hubapi import HubClient, HubUser
from .money import cents
from .notices import STOPPED
from .reconcile import RunningServer, reconcile
from .usage import StorageMeter

log = logging.getLogger("posehub.cost")

STOP_AT = Decimal(100)
DASK_WORKER = "dask-worker"


def percent_of(spent: Decimal, budget: Decimal) -> Decimal:
    """Spend as a percentage of the budget; a zero budget with any spend counts as 100 %."""
    if budget <= 0:
        return STOP_AT if spent > 0 else Decimal(0)
    return spent * 100 / budget


def level_for(percent: Decimal, warn_at: Sequence[float]) -> str | None:
    """The highest level reached: "stopped" at 100 %, else the highest warning level passed, else None."""
    if percent >= STOP_AT:
        return STOPPED
    passed = [Decimal(str(w)) for w in warn_at if percent >= Decimal(str(w))]
    return f"{max(passed).normalize():f}" if passed else None


def message_for(level: str, spent: Decimal, budget: Decimal, period: str, contact: str) -> str:
    """The sentence a user reads for ``level``."""
    used = f"${cents(spent):,.2f} of your ${cents(budget):,.2f} budget for {period}"
    if level == STOPPED:
        return (f"Your budget is used up: {used}. Your running servers were stopped and new ones "
                f"cannot start until the next period, unless {contact} grants an extension.")
    return (f"You have used {level} % of your budget: {used}. At 100 % your servers are stopped.")


def user_status(rep: CostReporter, user: str, groups) -> dict:
    """What the hub's home page, the spawn page and JupyterLab show a user about their budget."""
    left = rep.reservations.remaining(user, groups)
    pct = percent_of(left.spent, left.budget.total)
    level = level_for(pct, rep.cfg["costs"]["warn_at_percent"])
    msg = message_for(level, left.spent, left.budget.total, left.period.label,
                      rep.cfg["hub"]["admin_contact"]) if level else ""
    return {
        "user": user, "period": left.period.label, "budget": f"{cents(left.budget.total):.2f}",
        "spent": f"{cents(left.spent):.2f}", "remaining": f"{cents(max(left.remaining, Decimal(0))):.2f}",
        "percent_used": f"{pct.quantize(Decimal('0.1'))}", "level": level or "", "message": msg,
        "stopped": pct >= STOP_AT,
        # notices of other services this period (e.g. a watched folder paused), not the budget's own levels
        "notices": [n.message for n in rep.notices.of(user, left.period.label)
                    if not n.level.isdigit() and n.level != STOPPED],
    }


@dataclass
class TickResult:
    reconciled: int = 0
    warned: list[tuple[str, str]] = field(default_factory=list)  # (user, level)
    stopped: list[tuple[str, str]] = field(default_factory=list)  # (user, server)
    stopped_clusters: list[tuple[str, str]] = field(default_factory=list)  # (user, Dask cluster)


class Enforcer:
    def __init__(self, reporter: CostReporter, hub: HubClient, meter: StorageMeter | None = None,
                 gateway=None):
        self.rep = reporter
        self.hub = hub
        self.meter = meter
        self.gateway = gateway  # cost_reports.gatewayapi.GatewayClient, or None without Dask Gateway
        self.cfg = reporter.cfg

    def _running(self, users: list[HubUser]) -> dict:
        """What reconcile needs: {user: {server: RunningServer}}, skipping servers it cannot price."""
        running: dict = {}
        open_ids = {(s.user, s.resource_id) for s in self.rep.ledger.open_spans(kind="server")}
        for u in users:
            for srv in u.servers:
                prof = self.cfg.profile(srv.profile) if srv.profile else None
                known = (u.name, srv.name) in open_ids
                if not known and (srv.pending or not srv.ready):
                    # being spawned, refused (the hub then stops it: pending "stop") or stopped: the ledger
                    # never saw it run, and the spawner opens its span once it does
                    continue
                if prof is None and not known and not self._has_span(u.name, srv.name):
                    continue  # cannot be priced and the ledger never saw it
                running.setdefault(u.name, {})[srv.name] = RunningServer(
                    started=srv.started, profile=prof["slug"] if prof else None,
                    price_per_hour=prof["price_per_hour"] if prof else None,
                )
        return running

    def clusters_of(self, user: str) -> list[str]:
        """The user's Dask clusters that have running workers in the ledger."""
        if self.gateway is None:
            return []
        spans = self.rep.ledger.open_spans(user=user, kind=DASK_WORKER)
        return sorted({s.resource_id.split("/", 1)[0] for s in spans})

    def _has_span(self, user: str, server: str) -> bool:
        return any(s.resource_id == server and s.kind == "server" for s in self.rep.ledger.spans(self.rep.period(), user))

    async def tick(self) -> TickResult:
        result = TickResult()
        users = await self.hub.users()
        running = await asyncio.to_thread(self._running, users)
        rec = await asyncio.to_thread(reconcile, self.rep.ledger, running)
        result.reconciled = len(rec.closed) + len(rec.opened)
        for span in rec.closed:
            log.info("reconcile: closed span %s of %s/%s at %s", span.id, span.user, span.resource_id, span.end)
        for span in rec.opened:
            log.info("reconcile: opened span %s of %s/%s from %s", span.id, span.user, span.resource_id, span.start)
        if self.meter is not None:
            await asyncio.to_thread(self.meter.update, [u.name for u in users])
        for u in users:
            await self._enforce(u, result)
        return result

    async def _enforce(self, user: HubUser, result: TickResult) -> None:
        left = await asyncio.to_thread(self.rep.reservations.remaining, user.name, user.groups)
        budget, spent = left.budget.total, left.spent
        level = level_for(percent_of(spent, budget), self.cfg["costs"]["warn_at_percent"])
        if level is None:
            return
        contact = self.cfg["hub"]["admin_contact"]
        pct = percent_of(spent, budget)
        # every warning level passed is recorded once, even when one round jumps over several
        for warn in sorted(self.cfg["costs"]["warn_at_percent"]):
            if pct < Decimal(str(warn)):
                break
            lvl = level_for(Decimal(str(warn)), [warn])
            msg = message_for(lvl, spent, budget, left.period.label, contact)
            if await asyncio.to_thread(self.rep.notices.add_once, user.name, left.period.label, lvl, msg):
                log.warning("budget: %s passed %s %% (%s)", user.name, lvl, msg)
                result.warned.append((user.name, lvl))
        if level != STOPPED:
            return
        clusters = await asyncio.to_thread(self.clusters_of, user.name)
        if not user.servers and not clusters:
            return
        msg = message_for(STOPPED, spent, budget, left.period.label, contact)
        await asyncio.to_thread(self.rep.notices.add_once, user.name, left.period.label, STOPPED, msg)
        for name in clusters:
            log.warning("budget: stopping %s's Dask cluster %s: %s", user.name, name, msg)
            try:
                await self.gateway.stop_cluster(name)
                result.stopped_clusters.append((user.name, name))
            except Exception as e:  # noqa: BLE001 - try again at the next round
                log.error("budget: could not stop Dask cluster %s of %s: %s", name, user.name, e)
        for srv in user.servers:
            log.warning("budget: stopping %s/%s: %s", user.name, srv.name, msg)
            try:
                await self.hub.stop_server(user.name, srv.name)
                result.stopped.append((user.name, srv.name))
            except Exception as e:  # noqa: BLE001 - try again at the next round
                log.error("budget: could not stop %s/%s: %s", user.name, srv.name, e)
