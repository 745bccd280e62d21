"""Budgets: the pure policy (precedence, extensions) and the database store (overrides, audit log)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from cost_reports.budget_store import AuditEntry, BudgetStore
from cost_reports.budgets import BudgetPolicy, Extension, Overrides, base_budget, effective_budget
from cost_reports.clock import UTC

D = Decimal


def t(day, hour=0, month=11):
    return datetime(2026, month, day, hour, tzinfo=UTC)


CONFIG = {"budgets": {"default": 100, "period": "monthly",
                      "groups": {"lab": 500, "vision": "200.50", "empty": 0},
                      "users": {"carol": 50}}}


# ------------------------------------------------------------ pure policy


def test_policy_from_config():
    p = BudgetPolicy.from_config(CONFIG)
    assert (p.default, p.period, dict(p.groups), dict(p.users)) == (
        D(100), "monthly", {"lab": D(500), "vision": D("200.50"), "empty": D(0)}, {"carol": D(50)})

    class Cfg:
        data = {"budgets": {"period": "weekly"}}

    assert BudgetPolicy.from_config(Cfg()) == BudgetPolicy(default=D(300), period="weekly")
    assert BudgetPolicy.from_config({}) == BudgetPolicy()


@pytest.mark.parametrize("budgets, message", [
    ({"period": "daily"}, "budgets.period must be 'monthly' or 'weekly', got 'daily'"),
    ({"default": -5}, "default budget must be a number >= 0, got -5"),
    ({"groups": {"lab": "abc"}}, "budget of group 'lab' must be a number >= 0, got 'abc'"),
    ({"users": {"ann": float("nan")}}, "budget of user 'ann' must be a number >= 0, got nan"),
])
def test_policy_refuses(budgets, message):
    with pytest.raises(ValueError) as e:
        BudgetPolicy.from_config({"budgets": budgets})
    assert str(e.value) == message


def test_precedence_user_then_largest_group_then_default():
    p = BudgetPolicy.from_config(CONFIG)
    assert base_budget("ann", [], p) == (D(100), "default")
    assert base_budget("ann", ["unknown"], p) == (D(100), "default")
    assert base_budget("ann", ["vision", "lab", "unknown"], p) == (D(500), "group lab (posehub.yaml)")
    assert base_budget("ann", ["empty"], p) == (D(0), "group empty (posehub.yaml)")  # a group budget of 0 counts
    assert base_budget("carol", ["lab"], p) == (D(50), "user carol (posehub.yaml)")  # user wins, even if smaller
    ov = Overrides(users={"carol": D(70)}, groups={"lab": D(150)})
    assert base_budget("carol", ["lab"], p, ov) == (D(70), "user carol (set by an admin)")
    # an admin's group budget replaces that group's budget from the config; the largest group still wins
    assert base_budget("ann", ["lab", "vision"], p, ov) == (D("200.50"), "group vision (posehub.yaml)")
    assert base_budget("ann", ["lab"], p, ov) == (D(150), "group lab (set by an admin)")
    assert base_budget("ann", ["lab"], p, Overrides(users={"ann": D(0)})) == (D(0), "user ann (set by an admin)")


def test_extensions_count_while_valid():
    p = BudgetPolicy.from_config(CONFIG)
    ext = [Extension("ann", D(20), t(5), t(10)), Extension("ann", D("5.5"), t(1), t(30)),
           Extension("bob", D(99), t(1), t(30))]
    assert effective_budget("ann", [], p, extensions=ext, when=t(4, 23)).total == D("105.5")
    b = effective_budget("ann", [], p, extensions=ext, when=t(5))  # valid from granted_at ...
    assert (b.base, b.source, b.extensions, b.total) == (D(100), "default", D("25.5"), D("125.5"))
    assert effective_budget("ann", [], p, extensions=ext, when=t(9, 23)).total == D("125.5")
    assert effective_budget("ann", [], p, extensions=ext, when=t(10)).total == D("105.5")  # ... until `until`, exclusive
    assert effective_budget("ann", [], p, extensions=ext).total == D("125.5")  # when=None: all of them
    assert effective_budget("ann", [], p, extensions=ext, when=t(30)).total == D(100)


# ------------------------------------------------------------ the store


@pytest.fixture
def store(cost_db):
    return BudgetStore(cost_db, BudgetPolicy.from_config(CONFIG))


def test_set_clear_and_audit(store, clock):
    first = store.set_budget("user", "carol", "250", "admin1", "needs more")
    assert first == AuditEntry(first.id, t(1), "admin1", "set", "user", "carol", D(50), D(250), "needs more")
    assert store.budget("carol").total == D(250) and store.budget("carol").source == "user carol (set by an admin)"
    clock.advance(hours=5)
    store.set_budget("user", " carol ", 400, "admin2")  # names are stripped
    clock.advance(hours=1)
    store.set_budget("group", "lab", "600", "admin1")
    clock.advance(hours=1)
    store.set_budget("user", "carol", None, "admin1", "back to the config")
    store.set_budget("user", "dave", None, "admin1")  # clearing what was never set: logged, old and new None
    log = [(e.at, e.actor, e.action, e.scope, e.name, e.old, e.new, e.reason) for e in store.audit_log()]
    assert log == [
        (t(1, 0), "admin1", "set", "user", "carol", D(50), D(250), "needs more"),
        (t(1, 5), "admin2", "set", "user", "carol", D(250), D(400), ""),
        (t(1, 6), "admin1", "set", "group", "lab", D(500), D(600), ""),
        (t(1, 7), "admin1", "clear", "user", "carol", D(400), None, "back to the config"),
        (t(1, 7), "admin1", "clear", "user", "dave", None, None, ""),
    ]
    assert [e.name for e in store.audit_log("lab")] == ["lab"]
    assert store.overrides() == Overrides(users={}, groups={"lab": D(600)})
    assert store.budget("carol", ["lab"]).total == D(50)
    assert store.budget("ann", ["lab", "vision"]).total == D(600)
    assert store.budget("ann", ["vision"]).total == D("200.50")  # lab's run-time budget is not ann's without lab
    assert {u: b.total for u, b in store.budgets({"ann": ["vision"], "bob": ["lab"]}).items()} == {
        "ann": D("200.50"), "bob": D(600)}


@pytest.mark.parametrize("args, message", [
    (("user", "ann", "-1", "admin"), "budget of user 'ann' must be a number >= 0, got '-1'"),
    (("user", "ann", "abc", "admin"), "budget of user 'ann' must be a number >= 0, got 'abc'"),
    (("user", "ann", "NaN", "admin"), "budget of user 'ann' must be a number >= 0, got 'NaN'"),
    (("group", "lab", float("nan"), "admin"), "budget of group 'lab' must be a number >= 0, got nan"),
    (("group", "lab", "1e15", "admin"), "budget of group 'lab' must be less than 1000000000000, got '1e15'"),
    (("team", "lab", "10", "admin"), "unknown budget scope 'team' (expected 'user' or 'group')"),
    (("user", "", "10", "admin"), "user name must be a non-empty string, got ''"),
    (("group", "  ", "10", "admin"), "group name must be a non-empty string, got '  '"),
    (("user", "ann", "10", ""), "actor must be a non-empty string, got ''"),
])
def test_bad_budget_writes_nothing(store, args, message):
    store.set_budget("user", "ann", "10", "admin")
    log, overrides = store.audit_log(), store.overrides()
    with pytest.raises(ValueError) as e:
        store.set_budget(*args)
    assert str(e.value) == message
    assert store.audit_log() == log and store.overrides() == overrides
    assert len(log) == 1 and overrides == Overrides(users={"ann": D(10)}, groups={})


def test_extensions(store, clock):
    ext = store.grant_extension("ann", "25", t(10), "admin1", "deadline")
    assert (ext.user, ext.amount, ext.granted_at, ext.until, ext.granted_by, ext.reason) == (
        "ann", D(25), t(1), t(10), "admin1", "deadline")
    assert store.budget("ann").total == D(125)
    assert store.budget("ann", when=t(10)).total == D(100)
    assert store.budget("ann", when=t(10) - timedelta(microseconds=1)).total == D(125)
    assert store.extensions("ann", active_at=t(11)) == [] and store.extensions("ann") == [ext]
    entry = store.audit_log("ann")[-1]
    assert (entry.action, entry.scope, entry.old, entry.new, entry.reason) == (
        "extend", "user", None, D(25), "until 2026-11-10T00:00:00+00:00: deadline")
    clock.set(t(10))
    assert store.budget("ann").total == D(100)  # expired


@pytest.mark.parametrize("args, message", [
    (("ann", "0", t(10), "admin", "x"), "extension for user 'ann' must be > 0"),
    (("ann", "0.0000001", t(10), "admin", "x"), "extension for user 'ann' must be > 0"),
    (("ann", "-5", t(10), "admin", "x"), "extension for user 'ann' must be a number >= 0, got '-5'"),
    (("ann", "abc", t(10), "admin", "x"), "extension for user 'ann' must be a number >= 0, got 'abc'"),
    (("ann", "5", t(1), "admin", "x"),
     "extension end 2026-11-01T00:00:00+00:00 is not after now (2026-11-01T00:00:00+00:00)"),
    (("ann", "5", datetime(2026, 11, 10), "admin", "x"),
     "extension end must be timezone-aware (UTC), got naive 2026-11-10T00:00:00"),
    (("ann", "5", t(10), "admin", " "), "reason must be a non-empty string, got ' '"),
    (("ann", "5", datetime(2027, 11, 4, tzinfo=UTC), "admin", "x"), "extension end 2027-11-04T00:00:00+00:00 is more than 366 days away: grant a "
     "shorter extension, or change the user's budget instead"),
    (("", "5", t(10), "admin", "x"), "user must be a non-empty string, got ''"),
])
def test_bad_extension_writes_nothing(store, args, message):
    with pytest.raises(ValueError) as e:
        store.grant_extension(*args)
    assert str(e.value) == message
    assert store.audit_log() == [] and store.extensions("ann") == []
