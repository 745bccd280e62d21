"""The enforcer's view of the hub: which servers reconcile may open spans for."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from cost_reports.core import CostReporter
from cost_reports.enforce import Enforcer
from cost_reports.hubapi import parse_user
from cost_reports.reconcile import reconcile
from posehub.config import load


def _user(name, pending, ready, profile="cpu-small", started="2026-11-01T00:00:00Z"):
    return parse_user({"name": name, "servers": {"": {
        "started": started, "ready": ready, "pending": pending, "user_options": {"profile": profile}}}})


def test_parse_user_keeps_pending():
    u = _user("alice", "spawn", False)
    assert u.servers[0].pending == "spawn" and not u.servers[0].ready
    assert _user("bob", None, True).servers[0].pending is None


def test_a_server_still_spawning_gets_no_span_from_reconcile(cost_db, clock):
    """A spawn in progress (or one the spawner is about to refuse) is the spawner's business:
    reconcile opening a span for it would charge a refused spawn."""
    cfg = load()
    rep = CostReporter(cfg, db=cost_db)
    enforcer = Enforcer(rep, hub=None)
    running = enforcer._running([_user("alice", "spawn", False), _user("bob", None, True)])
    assert set(running) == {"bob"}
    rec = reconcile(rep.ledger, running)
    assert [s.user for s in rec.opened] == ["bob"]
    assert rep.ledger.open_spans("alice") == []


def test_a_server_stopping_keeps_its_span_until_the_spawner_closes_it(cost_db, clock):
    cfg = load()
    rep = CostReporter(cfg, db=cost_db)
    price = Decimal(str(cfg.profile("cpu-small")["price_per_hour"]))
    rep.ledger.open_span("alice", "server", "", price, profile="cpu-small")
    clock.advance(timedelta(minutes=5))
    running = Enforcer(rep, hub=None)._running([_user("alice", "stop", False, started=None)])
    assert set(running) == {"alice"}
    assert reconcile(rep.ledger, running).closed == []


def test_a_refused_spawn_being_stopped_gets_no_span_from_reconcile(cost_db, clock):
    """After the spawner refuses a spawn, the hub stops the server (pending "stop"): the ledger never saw it
    run, so reconcile must not open a span for it (seen as a flaky charge of refused spawns)."""
    cfg = load()
    rep = CostReporter(cfg, db=cost_db)
    running = Enforcer(rep, hub=None)._running([_user("alice", "stop", False, started=None),
                                                _user("carol", None, False, started=None)])
    assert running == {}
    assert reconcile(rep.ledger, running).opened == []
