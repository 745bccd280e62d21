"""Prometheus metrics of spend, budgets and what runs (``GET /services/cost/metrics``), beside JupyterHub's
own ``/hub/metrics`` (servers, spawns and their failures, requests).

:func:`snapshot` reads the ledger (in a thread); :func:`render` turns a :class:`Snapshot` into
Prometheus' text format (pure). Figures are of the current budget period; money in US dollars.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class UserFigures:
    user: str
    spent: Decimal
    budget: Decimal


@dataclass
class Snapshot:
    period: str
    users: list[UserFigures]
    running: dict[tuple[str, str], int]  # (kind, profile) -> open spans
    notices: dict[str, int]  # budget notices of this period by level (80, 95, stopped)
    stops: dict[str, int] = field(default_factory=dict)  # what the enforcer stopped since it started, by kind


def snapshot(rep, users: dict[str, list[str]], stops: dict[str, int]) -> Snapshot:
    """The figures of ``users`` ({name: groups}: the hub's users, and anyone with spend this period)."""
    period = rep.period()
    names = set(users) | set(rep.ledger.spend_by_user(period))
    figures = []
    notices: Counter = Counter()
    for name in sorted(names):
        left = rep.reservations.remaining(name, users.get(name, []))
        figures.append(UserFigures(name, left.spent, left.budget.total))
        notices.update(n.level for n in rep.notices.of(name, left.period.label))
    running = Counter((s.kind, s.profile or "") for s in rep.ledger.open_spans() if s.kind != "storage")
    return Snapshot(period.label, figures, dict(running), dict(notices), dict(stops))


class _Collector:
    def __init__(self, snap: Snapshot):
        self.snap = snap

    def collect(self):
        s = self.snap
        spend = GaugeMetricFamily("posehub_spend_dollars", "Spend of the current budget period, in US dollars.",
                                  labels=["user", "period"])
        budget = GaugeMetricFamily("posehub_budget_dollars", "Budget of the current period, in US dollars.",
                                   labels=["user", "period"])
        used = GaugeMetricFamily("posehub_budget_used_percent", "Spend as a percentage of the budget.",
                                 labels=["user", "period"])
        for u in s.users:
            spend.add_metric([u.user, s.period], float(u.spent))
            budget.add_metric([u.user, s.period], float(u.budget))
            used.add_metric([u.user, s.period], float(u.spent / u.budget * 100) if u.budget > 0 else 0.0)
        running = GaugeMetricFamily("posehub_running", "Servers and Dask workers running now, by profile.",
                                    labels=["kind", "profile"])
        for (kind, profile), n in sorted(s.running.items()):
            running.add_metric([kind, profile], n)
        notices = GaugeMetricFamily("posehub_budget_notices", "Budget warnings and stops of the current period.",
                                    labels=["level", "period"])
        for level, n in sorted(s.notices.items()):
            notices.add_metric([level, s.period], n)
        stops = CounterMetricFamily("posehub_budget_stops", "Servers and Dask clusters stopped for their budget.",
                                    labels=["kind"])
        for kind, n in sorted(s.stops.items()):
            stops.add_metric([kind], n)
        return [spend, budget, used, running, notices, stops]


def render(snap: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snap))
    return generate_latest(registry)
