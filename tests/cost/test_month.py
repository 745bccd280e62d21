"""November 2026 simulated with a fake clock, totals checked to the cent against hand-computed values.

Prices: gpu $1.21/h, gpu-large $3.00/h, cpu-large $0.50/h, cpu-small $0.10/h,
dask worker $0.20/h, dask scheduler $0.05/h, storage $0.08 per GB-month (730 h).
Budgets (posehub.yaml): default $100, group lab $150, user carol $40.
alice and dave are in lab; bob, carol and eve in no group.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from cost_reports.budget_store import BudgetStore
from cost_reports.budgets import BudgetPolicy
from cost_reports.clock import UTC
from cost_reports.ledger import Ledger
from cost_reports.periods import parse_period
from cost_reports.reconcile import RunningServer, reconcile
from cost_reports.render import admin_csv
from cost_reports.reports import AdminRow, admin_report, admin_report_from_spend, user_report
from cost_reports.reservations import BudgetExceeded, Reservations

D = Decimal
NOV = parse_period("2026-11")
GROUPS = {"alice": ["lab"], "bob": [], "carol": [], "dave": ["lab"], "eve": []}
PRICE = {"gpu": D("1.21"), "gpu-large": D("3.00"), "cpu-large": D("0.50"), "cpu-small": D("0.10")}


def t(day, hour=0, minute=0, month=11):
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


class Hub:
    """What the spawner does: reserve a 4-hour block, open the span, settle; close the span on stop."""

    def __init__(self, db, clock):
        self.clock = clock
        self.ledger = Ledger(db)
        policy = BudgetPolicy.from_config({"budgets": {"default": 100, "groups": {"lab": 150}, "users": {"carol": 40}}})
        self.budgets = BudgetStore(db, policy)
        self.res = Reservations(self.budgets)

    def reserve(self, user, profile, at, block_hours=4):
        self.clock.set(at)
        return self.res.reserve(user, PRICE[profile] * block_hours, timedelta(minutes=10), GROUPS[user])

    def spawn(self, user, profile, at, server="", block_hours=4):
        rid = self.reserve(user, profile, at, block_hours)
        span = self.ledger.open_span(user, "server", server, PRICE[profile], profile=profile)
        self.res.settle(rid, span.id)
        return span

    def stop(self, user, at, server=""):
        self.clock.set(at)
        assert self.ledger.close_resource(user, "server", server) is not None


def admin(hub, now):
    hub.clock.set(now)
    when = min(now, NOV.end)
    budgets = hub.budgets.budgets(GROUPS, when=when)
    slow = admin_report(hub.ledger.spans(NOV), NOV, budgets, now)
    fast = admin_report_from_spend(hub.ledger.spend_by_user(NOV), NOV, budgets, now)
    assert fast == slow  # the SQL path gives the same report as the spans
    return fast


def row(user, spent, budget, remaining, pct, forecast):
    return AdminRow(user, D(spent), D(budget), D(remaining), None if pct is None else D(pct), D(forecast))


def test_november(cost_db, clock):
    hub = Hub(cost_db, clock)
    L = hub.ledger

    # dave's home folder: 50 GB for 73 h
    L.open_span("dave", "storage", "home", "0.08", quantity=50, start=t(1))
    clock.set(t(4, 1))
    L.close_resource("dave", "storage", "home")

    hub.spawn("alice", "gpu", t(2, 9))
    hub.spawn("bob", "cpu-small", t(2, 10))
    hub.stop("bob", t(2, 10, 30))
    hub.stop("alice", t(2, 12))
    hub.spawn("carol", "gpu", t(3, 8))
    hub.stop("carol", t(3, 18))

    # 5 Nov: the hub wedges in the evening and is restarted the next morning.
    hub.spawn("alice", "cpu-large", t(5, 14), server="analysis")  # stops at 19:30, never recorded
    hub.spawn("bob", "gpu", t(5, 19))  # keeps running through the restart
    hub.reserve("dave", "cpu-small", t(5, 19, 55))  # starts, but the hub dies before the span is written
    clock.set(t(6, 9))
    assert hub.res.active() == []  # dave's reservation was never settled: it expired after 10 minutes
    restart = {"bob": {"": t(5, 19)}, "dave": {"": RunningServer(t(5, 19, 55), "cpu-small", "0.10")}}
    stopped = {"alice": {"analysis": t(5, 19, 30)}}
    result = reconcile(L, restart, stopped_at=stopped)
    assert [(s.user, s.resource_id, s.end, s.cost) for s in result.closed] == [
        ("alice", "analysis", t(5, 19, 30), D("2.75"))]  # 5.5 h × $0.50
    assert [(s.user, s.start, s.rate) for s in result.opened] == [("dave", t(5, 19, 55), D("0.10"))]
    assert not reconcile(L, restart, stopped_at=stopped).changed
    hub.stop("bob", t(6, 11))
    hub.stop("dave", t(6, 19, 55))

    # 10 Nov: alice's server is restarted behind the ledger's back (new run from 11:00, on gpu).
    hub.spawn("alice", "cpu-small", t(10, 8))
    clock.set(t(10, 12))
    running = {"alice": {"": RunningServer(t(10, 11), "gpu", PRICE["gpu"])}}
    result = reconcile(L, running, stopped_at={"alice": {"": t(10, 10, 30)}})
    assert [(s.profile, s.end, s.cost) for s in result.closed] == [("cpu-small", t(10, 10, 30), D("0.25"))]
    assert [(s.profile, s.start) for s in result.opened] == [("gpu", t(10, 11))]
    assert not reconcile(L, running).changed
    hub.stop("alice", t(10, 15))

    # 14-16 Nov: carol hits her $40 cap; an admin raises it to $60.
    hub.spawn("carol", "gpu", t(14, 9))
    hub.stop("carol", t(14, 21))
    with pytest.raises(BudgetExceeded) as e:
        hub.spawn("carol", "gpu", t(15, 10), block_hours=24)
    # spent: 10 h × $1.21 + 12 h × $1.21 = $26.62; left $40 - $26.62 = $13.38; asked 24 h × $1.21 = $29.04
    assert str(e.value) == ("budget exceeded for carol: $13.38 remaining in 2026-11 "
                            "(budget $40.00, spent $26.62, reserved $0.00), $29.04 asked")
    clock.set(t(15, 12))
    hub.budgets.set_budget("user", "carol", "60", "admin", "thesis deadline")
    hub.spawn("carol", "gpu", t(15, 12), block_hours=24)

    # Mid-month, 16 Nov 00:00: half of November has passed, so the forecast is twice the spend.
    clock.set(t(16))
    rep = user_report("carol", L.spans(NOV, "carol"), NOV, hub.budgets.budget("carol"), clock.now())
    # 10 h + 12 h + 12 h (still running) = 34 h × $1.21 = $41.14; forecast $41.14 / 0.5 = $82.28
    assert (rep.budget, rep.spent, rep.remaining, rep.percent_used, rep.forecast) == (
        D("60.00"), D("41.14"), D("18.86"), D("68.6"), D("82.28"))
    assert {d.day: v for d, v in rep.by_day.items() if v} == {3: D("12.10"), 14: D("14.52"), 15: D("14.52")}
    assert len(rep.by_day) == 30 and rep.by_profile == {"gpu": D("41.14")}
    mid = admin(hub, t(16))
    assert mid.rows == [
        row("carol", "41.14", "60.00", "18.86", "68.6", "82.28"),
        # 0.5 h × $0.10 + 16 h × $1.21 = $19.41
        row("bob", "19.41", "100.00", "80.59", "19.4", "38.82"),
        # 3 h × $1.21 + 5.5 h × $0.50 + 2.5 h × $0.10 + 4 h × $1.21 = $11.47
        row("alice", "11.47", "150.00", "138.53", "7.6", "22.94"),
        # 50 GB × $0.08 × 73 h / 730 h + 24 h × $0.10 = $0.40 + $2.40 = $2.80
        row("dave", "2.80", "150.00", "147.20", "1.9", "5.60"),
        row("eve", "0.00", "100.00", "100.00", "0.0", "0.00"),
    ]
    assert (mid.total_spent, mid.total_budget) == (D("74.82"), D("560.00"))
    hub.stop("carol", t(16, 12))

    # 18-20 Nov: bob runs over his $100; an extension of $50 until 25 Nov lets him spawn again.
    hub.spawn("bob", "gpu-large", t(18))
    hub.stop("bob", t(19, 6))
    with pytest.raises(BudgetExceeded) as e:
        hub.spawn("bob", "gpu-large", t(20, 9))
    # spent $19.41 + 30 h × $3.00 = $109.41: nothing left of $100; asked 4 h × $3.00
    assert str(e.value) == ("budget exceeded for bob: $0.00 remaining in 2026-11 "
                            "(budget $100.00, spent $109.41, reserved $0.00), $12.00 asked")
    hub.budgets.grant_extension("bob", "50", t(25), "admin", "conference")
    hub.spawn("bob", "gpu-large", t(20, 9))
    hub.stop("bob", t(20, 13))
    clock.set(t(22))
    # $100 + $50 - ($109.41 + 4 h × $3.00) = $28.59
    assert hub.res.remaining("bob").remaining == D("28.59")
    clock.set(t(25))
    assert hub.res.remaining("bob").remaining == D("-21.41")  # the extension has ended

    # dave's dask cluster: two workers and a scheduler for 2.5 h
    for kind, rid, rate in [("dask-scheduler", "s", "0.05"), ("dask-worker", "w1", "0.20"), ("dask-worker", "w2", "0.20")]:
        L.open_span("dave", kind, rid, rate, start=t(20, 10))
        L.close_resource("dave", kind, rid, end=t(20, 12, 30))

    # alice works across midnight into December
    hub.spawn("alice", "gpu", t(30, 20))
    hub.stop("alice", t(1, 2, month=12))
    assert L.spans("2026-12")[0].cost == D("7.26")  # 6 h × $1.21, 4 h of them in November

    # ---- the month's books, 1 Dec 02:00
    assert L.spend_by_user(NOV) == {
        # 3 h × $1.21 + 5.5 h × $0.50 + 2.5 h × $0.10 + 4 h × $1.21 + 4 h × $1.21 = $16.31
        "alice": D("16.31"),
        # 0.5 h × $0.10 + 16 h × $1.21 + 30 h × $3.00 + 4 h × $3.00 = $121.41
        "bob": D("121.41"),
        # (10 h + 12 h + 24 h) × $1.21 = $55.66
        "carol": D("55.66"),
        # $0.40 storage + 24 h × $0.10 + 2 × 2.5 h × $0.20 + 2.5 h × $0.05 = $3.925
        "dave": D("3.925"),
    }
    # $16.31 + $121.41 + $55.66 + $3.925 = $197.305
    assert L.total(NOV) == D("197.305")
    assert L.spend_by_user("2026-12") == {"alice": D("2.42")}  # 2 h × $1.21

    end = admin(hub, t(1, 2, month=12))
    assert end.rows == [
        row("bob", "121.41", "100.00", "-21.41", "121.4", "121.41"),  # the extension ended on 25 Nov
        row("carol", "55.66", "60.00", "4.34", "92.8", "55.66"),
        row("alice", "16.31", "150.00", "133.69", "10.9", "16.31"),
        row("dave", "3.93", "150.00", "146.08", "2.6", "3.93"),  # $3.925 rounds half up
        row("eve", "0.00", "100.00", "100.00", "0.0", "0.00"),
    ]
    assert (end.total_spent, end.total_budget) == (D("197.31"), D("560.00"))
    assert admin_csv(end).splitlines()[:3] == [
        "user,spent,budget,remaining,percent_used,forecast",
        "bob,121.41,100.00,-21.41,121.4,121.41",
        "carol,55.66,60.00,4.34,92.8,55.66",
    ]

    rep = user_report("alice", L.spans(NOV, "alice"), NOV, hub.budgets.budget("alice", ["lab"], when=NOV.end), clock.now())
    assert (rep.spent, rep.remaining, rep.percent_used, rep.forecast) == (D("16.31"), D("133.69"), D("10.9"), D("16.31"))
    # gpu: 3 h + 4 h + 4 h = 11 h × $1.21 = $13.31
    assert rep.by_profile == {"cpu-large": D("2.75"), "cpu-small": D("0.25"), "gpu": D("13.31")}
    # 10 Nov: 2.5 h × $0.10 + 4 h × $1.21 = $5.09; 30 Nov: 20:00-24:00, 4 h × $1.21 = $4.84
    assert {d: v for d, v in rep.by_day.items() if v} == {
        date(2026, 11, 2): D("3.63"), date(2026, 11, 5): D("2.75"), date(2026, 11, 10): D("5.09"),
        date(2026, 11, 30): D("4.84")}
    rep = user_report("dave", L.spans(NOV, "dave"), NOV, D(150), clock.now())
    assert rep.by_profile == {"cpu-small": D("2.40"), "dask-scheduler": D("0.13"), "dask-worker": D("1.00"),
                              "storage": D("0.40")}

    log = [(e.at, e.actor, e.action, e.name, e.old, e.new, e.reason) for e in hub.budgets.audit_log()]
    assert log == [
        (t(15, 12), "admin", "set", "carol", D(40), D(60), "thesis deadline"),
        (t(20, 9), "admin", "extend", "bob", None, D(50), "until 2026-11-25T00:00:00+00:00: conference"),
    ]
