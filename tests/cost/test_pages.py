"""The cost pages read at a glance: no rows of $0.00 for a period with no spend, a plot whose axis starts at $0
and reaches the budget, spend per day stacked by profile."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from cost_reports.periods import parse_period
from cost_reports.plot import user_figure, user_plot
from cost_reports.render import user_html
from cost_reports.reports import user_report
from cost_reports.spans import SpanRecord

UTC = timezone.utc
NOV = parse_period("2026-11", "monthly")
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def span(i, profile, start, end, rate):
    return SpanRecord(id=i, user="alice", kind="server", profile=profile, resource_id="", start=start, end=end,
                      rate=Decimal(rate), unit="hour", quantity=Decimal(1), cost=None)


def test_a_period_with_no_spend_says_so_and_its_plot_starts_at_zero():
    report = user_report("alice", [], NOV, 300, NOW)
    html = user_html(report)
    assert "Nothing spent in 2026-11 yet." in html and "<table" not in html and "$0.00</td>" not in html
    ax = user_figure(report).axes[0]
    assert ax.get_ylim() == (0, 330.0)  # from $0 to past the budget line, never below zero
    assert ax.get_title() == "alice: nothing spent in 2026-11 yet"
    assert user_plot(report).startswith(b"\x89PNG")


def test_spend_shows_only_the_days_and_profiles_that_cost_something_stacked_by_profile():
    spans = [span(1, "gpu", datetime(2026, 11, 3, 8, tzinfo=UTC), datetime(2026, 11, 3, 18, tzinfo=UTC), "1.21"),
             span(2, "cpu-small", datetime(2026, 11, 3, 9, tzinfo=UTC), datetime(2026, 11, 3, 11, tzinfo=UTC), "0.10"),
             span(3, "cpu-small", datetime(2026, 11, 5, 9, tzinfo=UTC), datetime(2026, 11, 5, 19, tzinfo=UTC), "0.10")]
    report = user_report("alice", spans, NOV, 50, NOW)
    html = user_html(report)
    assert html.count("<tr><td>2026-11-") == 2  # Nov 3 and Nov 5, not 30 rows
    assert "<tr><td>2026-11-03</td><td>$12.30</td></tr>" in html and "<tr><td>2026-11-05</td><td>$1.00</td></tr>" in html
    assert "<tr><td>gpu</td><td>$12.10</td></tr>" in html and "<tr><td>cpu-small</td><td>$1.20</td></tr>" in html
    ax = user_figure(report).axes[0]
    bars = {c.get_label(): c for c in ax.containers}
    assert set(bars) == {"cpu-small", "gpu"}
    nov3 = list(report.by_day).index(datetime(2026, 11, 3).date())
    # stacked: the second profile's bar of Nov 3 starts where the first one's ends
    first, second = sorted(bars.values(), key=lambda c: c[nov3].get_y())
    assert second[nov3].get_y() == first[nov3].get_height() > 0
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 50
    assert ax.get_title() == "alice: $13.30 of $50.00 in 2026-11"


def test_a_profile_used_for_less_than_a_cent_is_still_listed():
    spans = [span(1, "cpu-small", datetime(2026, 11, 3, 8, tzinfo=UTC), datetime(2026, 11, 3, 8, 0, 5, tzinfo=UTC),
                  "0.10")]
    html = user_html(user_report("alice", spans, NOV, 50, NOW))
    assert "<tr><td>cpu-small</td><td>$0.00</td></tr>" in html and "Nothing spent" not in html
    assert "by-day" not in html  # no day cost a cent
