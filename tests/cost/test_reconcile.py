"""Reconcile after a hub restart: the ledger made to agree with the servers really running."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from cost_reports.clock import UTC
from cost_reports.ledger import Ledger
from cost_reports.reconcile import RunningServer, reconcile

D = Decimal


def t(day, hour=0, minute=0):
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def shape(spans):
    return [(s.user, s.resource_id, s.profile, s.start, s.end, s.rate, s.cost) for s in spans]


@pytest.fixture
def ledger(cost_db):
    return Ledger(cost_db)


def test_crash_closes_at_stop_time(ledger, clock):
    a = ledger.open_span("alice", "server", "", "1.20", profile="gpu", start=t(1, 9))
    b = ledger.open_span("bob", "server", "big", "2.00", profile="cpu", start=t(1, 9))
    c = ledger.open_span("carol", "server", "", "1.00", profile="cpu", start=t(1, 11))
    ledger.open_span("dave", "storage", "home", "0.08", quantity=10, start=t(1))  # storage is not a server
    clock.set(t(1, 12))
    result = reconcile(ledger, {}, stopped_at={"alice": {"": t(1, 10, 30)},  # the hub's last activity
                                               "carol": {"": t(1, 10)}})  # before the span began: costs nothing
    assert shape(result.closed) == [
        # 1.5 h × $1.20 = $1.80
        ("alice", "", "gpu", t(1, 9), t(1, 10, 30), D("1.20"), D("1.80")),
        # no stop time known: closed now, 3 h × $2.00 = $6.00
        ("bob", "big", "cpu", t(1, 9), t(1, 12), D("2.00"), D("6.00")),
        ("carol", "", "cpu", t(1, 11), t(1, 11), D("1.00"), D("0")),
    ]
    assert result.opened == [] and result.changed
    assert [s.id for s in ledger.open_spans()] == [ledger.open_spans("dave")[0].id]
    assert {s.id for s in result.closed} == {a.id, b.id, c.id}
    again = reconcile(ledger, {}, stopped_at={"alice": {"": t(1, 11)}})
    assert not again.changed and ledger.spend("alice", "2026-11") == D("1.80")


def test_stop_time_after_now_is_clamped(ledger, clock):
    ledger.open_span("alice", "server", "", "1.00", profile="gpu", start=t(1, 9))
    result = reconcile(ledger, {}, now=t(1, 10), stopped_at={"alice": {"": t(1, 18)}})
    assert shape(result.closed) == [("alice", "", "gpu", t(1, 9), t(1, 10), D("1.00"), D("1.00"))]


def test_running_without_span_is_opened(ledger, clock):
    clock.set(t(2, 8))
    running = {"alice": {"": RunningServer(t(2, 7), "gpu", "1.21")},
               "bob": {"": RunningServer(None, "cpu", D("0.10"))}}
    result = reconcile(ledger, running)
    assert shape(result.opened) == [
        ("alice", "", "gpu", t(2, 7), None, D("1.21"), None),
        ("bob", "", "cpu", t(2, 8), None, D("0.10"), None),  # start unknown: from now
    ]
    assert result.closed == [] and all(s.note == "opened by reconcile" for s in result.opened)
    before = shape(ledger.spans("2026-11"))
    clock.advance(hours=1)
    assert not reconcile(ledger, running).changed  # running it again changes nothing
    assert not reconcile(ledger, {"alice": {"": t(2, 7)}, "bob": {"": None}}).changed
    assert shape(ledger.spans("2026-11")) == before
    # alice: 2 h × $1.21 = $2.42 (07:00 to 09:00); bob: 1 h × $0.10 = $0.10
    assert ledger.spend_by_user("2026-11") == {"alice": D("2.42"), "bob": D("0.10")}


def test_never_counts_an_hour_twice(ledger, clock):
    s = ledger.open_span("alice", "server", "", "1.00", profile="gpu", start=t(3, 8))
    ledger.close_span(s.id, end=t(3, 10))
    clock.set(t(3, 11))
    # the hub says the server runs since 09:00, but the ledger already has it until 10:00
    result = reconcile(ledger, {"alice": {"": t(3, 9)}})
    assert shape(result.opened) == [("alice", "", "gpu", t(3, 10), None, D("1.00"), None)]  # profile and price taken over
    assert ledger.spend("alice", "2026-11") == D("3.00")  # 08:00 to 11:00, once


def test_unknown_profile_writes_nothing(ledger, clock):
    ledger.open_span("bob", "server", "", "1.00", profile="cpu", start=t(1))
    with pytest.raises(ValueError) as e:
        reconcile(ledger, {"alice": {"x": t(1)}}, now=t(1, 1))
    assert str(e.value) == ("server alice/x runs but has no span to take its profile and price from: "
                            "pass RunningServer(started, profile, price_per_hour)")
    assert [s.user for s in ledger.open_spans()] == ["bob"]  # bob's span was not closed either
    with pytest.raises(ValueError) as e:
        reconcile(ledger, {"alice": {"": "yesterday"}})
    assert str(e.value) == "open_servers['alice']['']: expected a datetime, None or RunningServer"


def test_restart_behind_the_ledgers_back(ledger, clock):
    old = ledger.open_span("alice", "server", "", "1.00", profile="cpu", start=t(4, 9))
    keep = ledger.open_span("bob", "server", "", "1.00", profile="cpu", start=t(4, 9))
    clock.set(t(4, 16))
    running = {"alice": {"": RunningServer(t(4, 14), "gpu", "3.00")},
               "bob": {"": t(4, 9) + timedelta(seconds=59)}}  # within the tolerance: the same run
    result = reconcile(ledger, running, stopped_at={"alice": {"": t(4, 11)}})
    assert shape(result.closed) == [("alice", "", "cpu", t(4, 9), t(4, 11), D("1.00"), D("2.00"))]
    assert shape(result.opened) == [("alice", "", "gpu", t(4, 14), None, D("3.00"), None)]
    assert result.closed[0].id == old.id and [s.id for s in ledger.open_spans("bob")] == [keep.id]
    assert not reconcile(ledger, running).changed
    # alice: 2 h × $1.00 (09:00-11:00) + 2 h × $3.00 (14:00-16:00) = $8.00
    assert ledger.spend("alice", "2026-11") == D("8.00")


def test_restart_without_stop_time_closes_at_new_start(ledger, clock):
    ledger.open_span("alice", "server", "", "1.00", profile="cpu", start=t(5, 9))
    clock.set(t(5, 13))
    result = reconcile(ledger, {"alice": {"": t(5, 12)}})
    # the old run is closed when the new one started; the new one keeps profile and price
    assert shape(result.closed) == [("alice", "", "cpu", t(5, 9), t(5, 12), D("1.00"), D("3.00"))]
    assert shape(result.opened) == [("alice", "", "cpu", t(5, 12), None, D("1.00"), None)]
    assert ledger.spend("alice", "2026-11") == D("4.00")
