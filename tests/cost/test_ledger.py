"""The ledger on both backends: spans opened and closed, spend per period, the fast spend paths."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from cost_reports.clock import UTC
from cost_reports.db import CostDB
from cost_reports.ledger import Ledger, spans_in, spend_by_user_in, spend_in, total_in
from cost_reports.models import Span
from cost_reports.periods import parse_period
from cost_reports.spans import spend_by, spend_of

D = Decimal
NOV, DEC = parse_period("2026-11"), parse_period("2026-12")


def t(day, hour=0, minute=0, month=11, second=0):
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def count_spans(db) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Span))


def test_open_close_idempotent(cost_db, clock):
    ledger = Ledger(cost_db)
    a = ledger.open_span("alice", "server", "", "1.21", profile="gpu")
    assert (a.user, a.kind, a.profile, a.start, a.end, a.rate, a.unit, a.cost) == (
        "alice", "server", "gpu", t(1), None, D("1.21"), "hour", None)
    clock.advance(hours=1)
    again = ledger.open_span("alice", "server", "", "9.99", profile="other")
    assert again == a and count_spans(cost_db) == 1  # the open span is returned; nothing is written
    clock.advance(hours=2)
    closed = ledger.close_span(a.id)
    # 3 h × $1.21 = $3.63
    assert (closed.end, closed.cost) == (t(1, 3), D("3.63"))
    clock.advance(hours=5)
    assert ledger.close_span(a.id, end=t(2)) == closed  # closing twice changes nothing
    assert ledger.close_resource("alice", "server", "") is None
    assert ledger.spend("alice", "2026-11") == D("3.63")
    b = ledger.open_span("alice", "server", "", "0.10", profile="cpu")
    assert b.id != a.id and b.start == t(1, 8)
    assert [s.id for s in ledger.open_spans("alice")] == [b.id]
    assert ledger.open_spans("bob") == [] and ledger.open_spans(kind="storage") == []


def test_bad_spans_write_nothing(cost_db):
    ledger = Ledger(cost_db)
    cases = [
        (dict(user="alice", kind="gpu", resource_id="", rate=1),
         "unknown resource kind 'gpu' (expected one of: server, dask-scheduler, dask-worker, storage)"),
        (dict(user="", kind="server", resource_id="", rate=1), "a span needs a user"),
        (dict(user="alice", kind="server", resource_id="", rate="-1"),
         "price of server '' must be a number >= 0, got '-1'"),
        (dict(user="alice", kind="server", resource_id="x", rate="abc"),
         "price of server 'x' must be a number >= 0, got 'abc'"),
        (dict(user="alice", kind="storage", resource_id="home", rate="0.08", quantity=0), "size in GB must be > 0"),
        (dict(user="alice", kind="storage", resource_id="home", rate="0.08", quantity="0.0000001"),
         "size in GB must be > 0"),  # rounds to 0 at the ledger's 6 decimals
        (dict(user="alice", kind="server", resource_id="", rate=1, start=datetime(2026, 11, 1)),
         "span start must be timezone-aware (UTC), got naive 2026-11-01T00:00:00"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as e:
            ledger.open_span(**kwargs)
        assert str(e.value) == message
    assert count_spans(cost_db) == 0
    with pytest.raises(LookupError) as e:
        ledger.close_span(999)
    assert str(e.value) == "no span 999 in the ledger"
    s = ledger.open_span("alice", "server", "", 1, start=t(2))
    with pytest.raises(ValueError) as e:
        ledger.close_span(s.id, end=t(1))
    assert str(e.value) == (f"span {s.id} cannot end at 2026-11-01T00:00:00+00:00, "
                            "before its start 2026-11-02T00:00:00+00:00")
    assert ledger.open_spans() == [s]


def test_spend_across_month_boundary(cost_db, clock):
    ledger = Ledger(cost_db)
    clock.set(t(30, 22))
    a = ledger.open_span("alice", "server", "", "1.50")
    b = ledger.open_span("bob", "server", "", "2.00", start=t(30, 23))
    clock.set(t(1, 2, month=12))
    a = ledger.close_span(a.id)
    assert a.cost == D("6.00")  # 4 h × $1.50
    clock.set(t(1, 1, 30, month=12))  # the clock may be set back; bob's span runs on
    # alice: 2 h × $1.50 = $3.00 in November and 2 h × $1.50 = $3.00 in December
    assert ledger.spend("alice", NOV) == D("3.00") and ledger.spend("alice", "2026-12") == D("3.00")
    # bob, still open: 1 h × $2.00 = $2.00 in November, 1.5 h × $2.00 = $3.00 in December so far
    assert ledger.spend("bob", "2026-11") == D("2.00") and ledger.spend("bob", DEC) == D("3.00")
    assert ledger.spend_by_user("2026-12") == {"alice": D("3.00"), "bob": D("3.00")}
    assert ledger.total(NOV) == D("5.00") and ledger.total(DEC) == D("6.00")
    assert [s.user for s in ledger.spans(NOV)] == ["alice", "bob"]
    assert [s.user for s in ledger.spans("2026-12", "bob")] == ["bob"]
    assert ledger.spans("2026-10") == [] and ledger.spend("alice", "2026-10") == 0
    assert ledger.spend("carol", NOV) == 0 and ledger.spend_by_user("2026-10") == {}


def test_storage_and_weekly(cost_db, clock):
    ledger = Ledger(cost_db)
    s = ledger.open_span("alice", "storage", "home", "0.08", quantity=50)
    assert (s.unit, s.quantity) == ("GB-month", D(50))
    clock.advance(hours=73)
    # 50 GB × $0.08 per GB-month × 73 h / 730 h = $0.40
    assert ledger.spend("alice", NOV) == D("0.40")
    assert ledger.close_resource("alice", "storage", "home").cost == D("0.40")
    ledger.open_span("alice", "server", "", "1.00", start=t(22, 22), note="crosses a week")
    clock.set(t(23, 3))
    # ISO week 47 ends at midnight 22/23 November: 2 h in W47, 3 h in W48 so far
    assert ledger.spend("alice", "2026-W47") == D("2.00") and ledger.spend("alice", "2026-W48") == D("3.00")


def test_money_on_sqlite_is_integer_millionths(db_url, clock):
    """SQLite keeps money as integer millionths of a dollar: exact, summed and compared by SQLite itself."""
    cost_db = CostDB(db_url("sqlite"), clock)
    cost_db.create_all()
    ledger = Ledger(cost_db)
    for i, rate in enumerate(["0", "1e-7", "1E+3", "0.1234565", "999999999999.999999"]):
        s = ledger.open_span("alice", "server", str(i), rate, start=t(1))
        ledger.close_span(s.id, end=t(1, 0, 0, second=1))
    with cost_db.read() as s:
        raw = s.execute(text("SELECT rate, cost, quantity, typeof(cost) FROM cost_spans ORDER BY id")).all()
        biggest = s.execute(text("SELECT max(rate) FROM cost_spans")).scalar()
    # rates rounded half up to 6 decimals: 1e-7 -> 0, 0.1234565 -> 0.123457
    assert [r[0] for r in raw] == [0, 0, 1_000_000_000, 123_457, 999_999_999_999_999_999]
    # 1 s at $1000/h = $0.277778 (rounded at close); at $0.123457/h: $0.000034; at $999999999999.999999/h: $277777777.777778
    assert [r[1] for r in raw] == [0, 0, 277_778, 34, 277_777_777_777_778]
    assert {r[2] for r in raw} == {1_000_000} and {r[3] for r in raw} == {"integer"}
    assert biggest == 999_999_999_999_999_999  # compared as numbers, not as text
    assert ledger.spend("alice", NOV) == D("277777778.055590")
    [big] = [x for x in ledger.spans(NOV) if x.resource_id == "4"]
    assert (big.rate, big.cost, str(big.quantity)) == (D("999999999999.999999"), D("277777777.777778"), "1.000000")


def test_text_money_ledger_is_refused(tmp_path, clock):
    """A SQLite ledger of the older layout (money as decimal text) is refused, not misread."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE cost_spans (id INTEGER PRIMARY KEY, user VARCHAR(255), kind VARCHAR(32), '
                     'profile VARCHAR(255), resource_id VARCHAR(255), start DATETIME, "end" DATETIME, '
                     'rate VARCHAR(32), unit VARCHAR(16), quantity VARCHAR(32), cost VARCHAR(32), note TEXT)')
    with pytest.raises(RuntimeError) as e:
        CostDB(f"sqlite:///{path}", clock).create_all()
    assert str(e.value) == (
        f"the ledger {path} keeps money as text in cost_spans.rate (VARCHAR(32)), cost_spans.quantity "
        "(VARCHAR(32)), cost_spans.cost (VARCHAR(32)); this version needs integer millionths: "
        "move the file aside to start a new ledger")


def _random_ledger(ledger: Ledger, rng: random.Random, users: int, spans: int) -> None:
    """Spans of all shapes around November: inside, across either boundary or both, open, empty."""
    lo = t(25, month=10)
    for i in range(spans):
        user = f"u{rng.randrange(users)}"
        start = lo + timedelta(seconds=rng.randrange(45 * 86400), microseconds=rng.randrange(10**6))
        length = timedelta(seconds=rng.choice([0, 1, 59, 3599, 7 * 3600 + 13, 40 * 86400, rng.randrange(3 * 86400)]))
        kind = rng.choice(["server", "server", "dask-worker", "storage"])
        rate = D(rng.randrange(0, 5_000_000)) / 10**6
        qty = D(rng.randrange(1, 10**8)) / 10**6 if kind == "storage" else 1
        s = ledger.open_span(user, kind, f"r{i}", rate, quantity=qty, start=start)
        if rng.random() < 0.9:
            ledger.close_span(s.id, end=start + length)


def test_fast_spend_equals_span_arithmetic(cost_db, clock):
    """spend_in / spend_by_user_in / total_in (SQL sums) give exactly the numbers of the pure functions over spans."""
    ledger = Ledger(cost_db)
    _random_ledger(ledger, random.Random(7), users=6, spans=300)
    for now in (t(20), t(5, month=12), t(1, month=1) + timedelta(days=40)):
        clock.set(now)
        for period in (NOV, DEC, parse_period("2026-W48")):
            with cost_db.read() as s:
                spans = spans_in(s, period)
                by_user = spend_by(spans, period, now, key=lambda sp: sp.user)
                assert by_user, "the random ledger should have spend in every period tested"
                assert spend_by_user_in(s, period, now) == by_user
                assert total_in(s, period, now) == spend_of(spans, period, now)
                for user in sorted(by_user) + ["nobody"]:
                    assert spend_in(s, user, period, now) == spend_of([x for x in spans if x.user == user], period, now)


def test_sqlite_spend_reads_index_ranges(db_url, clock):
    """On SQLite every spend statement reads an index range (no table scan, no skip-scan needing ANALYZE)."""
    from sqlalchemy.dialects import sqlite

    from cost_reports.spend import _statements

    cost_db = CostDB(db_url("sqlite"), clock)
    cost_db.create_all()
    plans = []
    with cost_db.engine.connect() as conn:
        for statement in _statements("sqlite"):
            sql = str(statement.compile(dialect=sqlite.dialect()))
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ("x",) * sql.count("?")).all()
            plans.append([r[-1] for r in rows if r[-1].startswith(("SEARCH", "SCAN"))])
    assert plans == [
        ["SEARCH cost_spans USING COVERING INDEX ix_cost_spans_user_start (user=? AND start>? AND start<?)"],
        ["SEARCH cost_spans USING INDEX ix_cost_spans_user_end (user=? AND end=?)",
         "SEARCH cost_spans USING INDEX ix_cost_spans_user_end (user=? AND end>?)",
         "SEARCH cost_spans USING INDEX ix_cost_spans_user_end (user=? AND end>?)"],
        ["SEARCH cost_spans USING COVERING INDEX ix_cost_spans_start (start>? AND start<?)"],
        ["SEARCH cost_spans USING INDEX ix_cost_spans_end (end=?)",
         "SEARCH cost_spans USING INDEX ix_cost_spans_end (end>?)",
         "SEARCH cost_spans USING INDEX ix_cost_spans_end (end>?)"],
    ]


def test_the_database_keeps_one_open_span_per_resource(cost_db, clock):
    """"A span is never counted twice" holds in the database itself (a unique index on open spans), not only in
    the code that opens them: a second open span of the same resource is refused."""
    from sqlalchemy.exc import IntegrityError

    def span():
        return Span(user="ann", kind="server", profile="cpu", resource_id="ann/", start=clock.now(),
                    rate=Decimal(1), unit="hour")

    with cost_db.write() as s:
        s.add(span())
    with pytest.raises(IntegrityError):
        with cost_db.write() as s:
            s.add(span())
    with cost_db.read() as s:
        assert s.scalar(select(func.count()).select_from(Span)) == 1
