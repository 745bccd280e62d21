"""Reports, pure: forecast, percentages, ordering of the admin report, rendering of money."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from cost_reports.clock import UTC
from cost_reports.periods import parse_period
from cost_reports.render import admin_csv, admin_json, user_csv
from cost_reports.reports import admin_report, elapsed_fraction, forecast, percent_used, user_report
from cost_reports.spans import SpanRecord

D = Decimal
NOV = parse_period("2026-11")


def t(day, hour=0, month=11):
    return datetime(2026, month, day, hour, tzinfo=UTC)


def span(user, start, end, rate, profile="gpu", i=1):
    cost = None if end is None else (D(int((end - start).total_seconds())) * D(rate) / 3600).quantize(D("0.000001"))
    return SpanRecord(i, user, "server", profile, "", start, end, D(rate), "hour", D(1), cost)


def test_forecast_and_percent():
    assert elapsed_fraction(NOV, t(1)) == 0 and elapsed_fraction(NOV, t(1, month=12)) == 1
    assert elapsed_fraction(NOV, t(7)) == D(6) / D(30)
    # 6 of 30 days gone with $12 spent: $12 / 0.2 = $60
    assert forecast(D(12), NOV, t(7)) == D(60)
    assert forecast(D(12), NOV, t(1)) == D(12) and forecast(D(12), NOV, t(3, month=12)) == D(12)
    assert percent_used(D("1.2345"), D(10)) == D("12.3") and percent_used(D("0.0005"), D(1)) == D("0.1")
    assert percent_used(D(5), D(0)) is None


def test_admin_report_order_and_render():
    spans = [span("ann", t(1), t(1, 10), "1.00"), span("bob", t(2), t(2, 2), "1.50", i=2),
             span("cat", t(3), None, "0.50", "cpu", i=3)]
    now = t(3, 4)
    rep = admin_report(spans, NOV, {"ann": D(20), "bob": D(0), "dan": D(5)}, now, default_budget=D(100))
    # bob has spend and a zero budget: first; then by percentage: ann 10/20 = 50 %, cat 2/100 = 2 % (default budget)
    assert [(r.user, r.spent, r.budget, r.percent_used) for r in rep.rows] == [
        ("bob", D("3.00"), D("0.00"), None), ("ann", D("10.00"), D("20.00"), D("50.0")),
        ("cat", D("2.00"), D("100.00"), D("2.0")), ("dan", D("0.00"), D("5.00"), D("0.0"))]
    assert (rep.total_spent, rep.total_budget) == (D("15.00"), D("125.00"))
    # bob's forecast: $3.00 in 52 h of 720 h: 3 × 720 / 52 = $41.538… -> $41.54; no percentage of a zero budget
    assert admin_csv(rep).splitlines()[1] == "bob,3.00,0.00,-3.00,,41.54"
    doc = json.loads(admin_json(rep))
    assert doc["users"][0] == {"user": "bob", "spent": "3.00", "budget": "0.00", "remaining": "-3.00",
                               "percent_used": None, "forecast": "41.54"}
    assert doc["total_spent"] == "15.00" and doc["period"] == "2026-11"


def test_user_report_csv():
    rep = user_report("ann", [span("ann", t(1, 22), t(2, 2), "1.00")], NOV, D(10), t(3))
    rows = user_csv(rep).splitlines()
    assert rows[:5] == ["section,key,amount", "summary,budget,10.00", "summary,spent,4.00", "summary,remaining,6.00",
                        "summary,forecast,60.00"]  # $4 in 2 of 30 days -> $60
    assert rows[5:8] == ["profile,gpu,4.00", "day,2026-11-01,2.00", "day,2026-11-02,2.00"]
    assert len(rows) == 5 + 1 + 30


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised():
    from cost_reports.render import csv_cell

    assert [csv_cell(v) for v in ("=1+2", "+cmd", "-cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "alice", "-3.00", "12.5",
                                  None)] == ["'=1+2", "'+cmd", "'-cmd|' /C calc'!A0", "'@SUM(A1)", "'\tx", "alice",
                                             "-3.00", "12.5", ""]
