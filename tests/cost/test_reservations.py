"""Reservations: reserve, settle, release, expiry, and one winner among concurrent spawns."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

import cost_reports.reservations as reservations_module
from cost_reports.budget_store import BudgetStore
from cost_reports.budgets import BudgetPolicy
from cost_reports.clock import UTC
from cost_reports.ledger import Ledger
from cost_reports.reservations import BudgetExceeded, ReservationError, Reservations

D = Decimal


def t(day, hour=0, minute=0):
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def res(cost_db):
    policy = BudgetPolicy.from_config({"budgets": {"default": 10, "groups": {"lab": 20}}})
    return Reservations(BudgetStore(cost_db, policy))


def test_reserve_settle_release(res, clock):
    ledger = Ledger(res.db)
    ledger.open_span("ann", "server", "", "1.00")
    clock.advance(hours=2)
    r1 = res.reserve("ann", "3", timedelta(minutes=10))
    left = res.remaining("ann")
    # $10 budget - 2 h × $1.00 spent - $3 reserved = $5
    assert (left.budget.total, left.spent, left.reserved, left.remaining, left.period.label) == (
        D(10), D(2), D(3), D(5), "2026-11")
    with pytest.raises(BudgetExceeded) as e:
        res.reserve("ann", "5.01", 600)
    assert str(e.value) == ("budget exceeded for ann: $5.00 remaining in 2026-11 "
                            "(budget $10.00, spent $2.00, reserved $3.00), $5.01 asked")
    assert (e.value.user, e.value.requested, e.value.remaining, e.value.spent, e.value.reserved) == (
        "ann", D("5.01"), D(5), D(2), D(3))
    assert [r.id for r in res.active("ann")] == [r1]  # nothing written by the refused one
    r2 = res.reserve("ann", "5", 600)  # exactly what is left fits
    assert res.remaining("ann").remaining == 0
    assert res.remaining("ann", ["lab"]).remaining == D(10)  # the group's $20 applies with the group

    settled = res.settle(r1, span_id=1)
    assert (settled.state, settled.span_id, settled.closed_at) == ("settled", 1, t(1, 2))
    assert res.settle(r1) == settled  # idempotent
    released = res.release(r2)
    assert released.state == "released" and res.release(r2) == released
    assert res.active() == [] and res.remaining("ann").remaining == D(8)
    with pytest.raises(ReservationError) as e:
        res.release(r1)
    assert str(e.value) == f"reservation {r1} is already settled, cannot mark it released"
    with pytest.raises(ReservationError) as e:
        res.settle("nope")
    assert str(e.value) == "no reservation 'nope'"


def test_expiry(res, clock):
    rid = res.reserve("bob", "9", 300)
    assert res.remaining("bob").remaining == D(1)
    clock.advance(seconds=299)
    assert res.remaining("bob").reserved == D(9) and [r.id for r in res.active()] == [rid]
    clock.advance(seconds=1)  # expires_at is exclusive
    assert res.remaining("bob").reserved == 0 and res.active() == []
    assert res.reserve("bob", "10", 300)


def test_extension_raises_the_cap(res, clock):
    with pytest.raises(BudgetExceeded):
        res.reserve("ann", "15", 60)
    res.budgets.grant_extension("ann", "5", t(2), "admin", "deadline")
    assert res.reserve("ann", "15", 60)
    assert res.remaining("ann").remaining == D(0)


@pytest.mark.parametrize("amount, ttl, message", [
    ("-1", 60, "reservation for user 'ann' must be a number >= 0, got '-1'"),
    ("abc", 60, "reservation for user 'ann' must be a number >= 0, got 'abc'"),
    ("1", 0, "reservation ttl must be > 0, got 0:00:00"),
    ("1", timedelta(seconds=-5), "reservation ttl must be > 0, got -1 day, 23:59:55"),
    ("1", "soon", "reservation ttl must be a number >= 0, got 'soon'"),
])
def test_bad_reservation(res, amount, ttl, message):
    with pytest.raises(ValueError) as e:
        res.reserve("ann", amount, ttl)
    assert str(e.value) == message
    assert res.active() == []


def test_concurrent_reservations_one_winner(res, monkeypatch):
    """8 spawns of one user at once, each asking $6 of a $10 budget: exactly one gets it.

    The check is slowed down (50 ms between reading what is left and writing the
    reservation), so without the per-user lock every thread would see $10 left.
    """
    slow_spend = reservations_module.spend_in

    def spend_in(*args):
        time.sleep(0.05)
        return slow_spend(*args)

    monkeypatch.setattr(reservations_module, "spend_in", spend_in)
    n = 8
    barrier = threading.Barrier(n)
    won, refused, errors = [], [], []

    def spawn():
        barrier.wait()
        try:
            won.append(res.reserve("ann", "6", 600))
        except BudgetExceeded as e:
            refused.append(e)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=spawn) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert len(won) == 1 and len(refused) == n - 1
    assert {(e.reserved, e.remaining) for e in refused} == {(D(6), D(4))}
    assert [r.id for r in res.active("ann")] == won
