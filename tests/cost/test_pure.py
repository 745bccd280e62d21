"""Pure arithmetic of the cost reporter: money, periods, the monthly estimate."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from cost_reports.clock import UTC, FakeClock, as_utc
from cost_reports.estimate import day_counts, estimate
from cost_reports.money import cents, hours, micros, stored, to_amount, usage_cost
from cost_reports.periods import month_period, parse_period, period_bounds

D = Decimal


def t(day, hour=0, minute=0, month=11, year=2026):
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ------------------------------------------------------------ money


@pytest.mark.parametrize("value, expected", [
    ("12.5", D("12.5")), (" $ 7 ", D("7")), (0.1, D("0.1")), (3, D("3")), (D("0.000001"), D("0.000001")),
    ("1e3", D("1000")),
])
def test_to_amount_accepts(value, expected):
    got = to_amount(value)
    assert got == expected and isinstance(got, Decimal)


@pytest.mark.parametrize("value, message", [
    ("abc", "price must be a number >= 0, got 'abc'"),
    ("", "price must be a number >= 0, got ''"),
    ("-1", "price must be a number >= 0, got '-1'"),
    (float("nan"), "price must be a number >= 0, got nan"),
    ("NaN", "price must be a number >= 0, got 'NaN'"),
    ("Infinity", "price must be a number >= 0, got 'Infinity'"),
    (float("inf"), "price must be a number >= 0, got inf"),
    (True, "price must be a number >= 0, got True"),
    (None, "price must be a number >= 0, got None"),
    ([1], "price must be a number >= 0, got [1]"),
    ("1e12", "price must be less than 1000000000000, got '1e12'"),
    ("1e30", "price must be less than 1000000000000, got '1e30'"),
])
def test_to_amount_refuses(value, message):
    with pytest.raises(ValueError) as e:
        to_amount(value, "price")
    assert str(e.value) == message


def test_to_amount_negative_allowed_and_no_negative_zero():
    assert to_amount("-2.5", allow_negative=True) == D("-2.5")
    with pytest.raises(ValueError, match=r"^delta must be a number, got 'x'$"):
        to_amount("x", "delta", allow_negative=True)
    zero = to_amount("-0")
    assert zero == 0 and not zero.is_signed()


def test_rounding_half_up():
    assert cents(D("1.425")) == D("1.43")
    assert cents(D("1.424999")) == D("1.42")
    assert cents(D("-1.425")) == D("-1.43")
    assert stored(D("0.0000005")) == D("0.000001")
    assert stored(D("0.00000049")) == D("0.000000")
    assert str(stored(D("3.63"))) == "3.630000"


def test_usage_cost_exact():
    # 3 h × $1.21 = $3.63
    assert usage_cost(t(1, 0), t(1, 3), D("1.21"), "hour") == D("3.63")
    # 90 min × $0.10 = $0.15
    assert usage_cost(t(1, 0), t(1, 1, 30), D("0.10"), "hour") == D("0.15")
    # 1 s × $1.21 / 3600 = $0.000336111… (unrounded, 28 digits)
    assert usage_cost(t(1), t(1) + timedelta(seconds=1), D("1.21"), "hour") == D("1.21") / 3600
    # 50 GB × $0.08 per GB-month over 730 h = $4.00; over 73 h = $0.40
    assert usage_cost(t(1), t(1) + timedelta(hours=730), D("0.08"), "GB-month", D(50)) == D("4")
    assert usage_cost(t(1), t(1) + timedelta(hours=73), D("0.08"), "GB-month", D(50)) == D("0.4")
    # empty and reversed stretches cost nothing
    assert usage_cost(t(1, 3), t(1, 3), D("1.21"), "hour") == 0
    assert usage_cost(t(1, 3), t(1, 0), D("1.21"), "hour") == 0
    with pytest.raises(ValueError) as e:
        usage_cost(t(1), t(2), D(1), "day")
    assert str(e.value) == "unknown unit 'day' (expected 'hour' or 'GB-month')"


def test_micros_and_hours():
    assert micros(timedelta(days=1, seconds=1, microseconds=7)) == 86_401_000_007
    assert hours(timedelta(minutes=90)) == D("1.5")


# ------------------------------------------------------------ clock


def test_as_utc_and_fake_clock():
    assert as_utc(datetime(2026, 11, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == t(1, 0)
    with pytest.raises(ValueError) as e:
        as_utc(datetime(2026, 11, 1), "span start")
    assert str(e.value) == "span start must be timezone-aware (UTC), got naive 2026-11-01T00:00:00"
    c = FakeClock(t(1))
    assert c.advance(hours=2) == t(1, 2) and c.now() == t(1, 2)
    with pytest.raises(ValueError) as e:
        c.advance(timedelta(minutes=-1))
    assert str(e.value) == "FakeClock.advance: cannot go back (-1 day, 23:59:00); use set()"
    assert c.set(t(1)) == t(1)


# ------------------------------------------------------------ periods


def test_months():
    nov = parse_period("2026-11")
    assert (nov.kind, nov.label, nov.start, nov.end) == ("monthly", "2026-11", t(1), t(1, month=12))
    assert len(nov.days()) == 30 and nov.days()[0] == date(2026, 11, 1) and nov.days()[-1] == date(2026, 11, 30)
    dec = nov.next()
    assert (dec.label, dec.end) == ("2026-12", t(1, month=1, year=2027))
    assert dec.previous() == nov and parse_period("2027-01").previous() == dec
    assert t(30, 23, 59) in nov and t(1, month=12) not in nov and t(1) in nov
    assert month_period(2026, 12) == dec


def test_weeks():
    w = parse_period("2026-W47")
    # ISO week 47 of 2026: Monday 16 to Sunday 22 November
    assert (w.kind, w.start, w.end) == ("weekly", t(16), t(23))
    assert parse_period("2026-W01").start == datetime(2025, 12, 29, tzinfo=UTC)
    assert parse_period("2026-W53").end == datetime(2027, 1, 4, tzinfo=UTC)  # 2026 has 53 ISO weeks
    assert period_bounds("weekly", t(22, 23, 59)).label == "2026-W47"
    assert period_bounds("weekly", t(23)).label == "2026-W48"


def test_period_bounds_in_utc():
    # 20:00 on 30 November in New York (UTC-5) is already December in UTC
    ny = datetime(2026, 11, 30, 20, tzinfo=timezone(timedelta(hours=-5)))
    assert period_bounds("monthly", ny).label == "2026-12"
    with pytest.raises(ValueError) as e:
        period_bounds("monthly", datetime(2026, 11, 5))
    assert str(e.value) == "period time must be timezone-aware (UTC), got naive 2026-11-05T00:00:00"


@pytest.mark.parametrize("text, kind, message", [
    ("2026-13", None, "unknown period '2026-13': month 13 is not 01..12"),
    ("2026-00", None, "unknown period '2026-00': month 0 is not 01..12"),
    ("1969-12", None, "unknown period '1969-12': year before 1970"),
    ("2025-W53", None, "unknown period '2025-W53': 2025 has ISO weeks 01..52"),
    ("2026-W00", None, "unknown period '2026-W00': 2026 has ISO weeks 01..53"),
    ("nov", None, "unknown period 'nov' (expected YYYY-MM for a month, e.g. 2026-11, "
                  "or YYYY-Www for an ISO week, e.g. 2026-W47)"),
    (202611, None, "unknown period 202611 (expected YYYY-MM for a month, e.g. 2026-11, "
                   "or YYYY-Www for an ISO week, e.g. 2026-W47)"),
    ("2026-W47", "monthly", "period '2026-W47' is weekly, but budgets here are monthly"),
    ("2026-11", "weekly", "period '2026-11' is monthly, but budgets here are weekly"),
    ("2026-11", "daily", "unknown budget period kind 'daily' (expected 'monthly' or 'weekly')"),
])
def test_parse_period_refuses(text, kind, message):
    with pytest.raises(ValueError) as e:
        parse_period(text, kind)
    assert str(e.value) == message


# ------------------------------------------------------------ estimate


def test_day_counts():
    # November 2026 starts on a Sunday: Saturdays 7, 14, 21, 28 and Sundays 1, 8, 15, 22, 29
    assert day_counts(2026, 11) == (21, 9)
    assert day_counts(2026, 2) == (20, 8)


def test_estimate_exact():
    e = estimate(10, 8, 2, "0.50", "2026-11")
    # 21 weekdays × 8 h + 9 weekend days × 2 h = 186 h; × $0.50 = $93.00 per user; × 10 = $930.00
    assert (e.month, e.users, e.weekdays, e.weekend_days) == ("2026-11", 10, 21, 9)
    assert (e.hours_per_user, e.per_user, e.total) == (D(186), D("93.00"), D("930.00"))
    e = estimate(["ann", "bob", "ann"], 7.5, 0, 1.21, date(2026, 2, 3))
    # 20 weekdays × 7.5 h = 150 h; × $1.21 = $181.50; two distinct users: $363.00
    assert (e.users, e.hours_per_user, e.per_user, e.total) == (2, D(150), D("181.50"), D("363.00"))
    e = estimate(3, 1, 1, "0.333", t(15))
    # 30 days × 1 h × $0.333 = $9.99 per user; $29.97 for 3
    assert (e.per_user, e.total) == (D("9.99"), D("29.97"))
    e = estimate(7, "0.1", 0, "0.05", "2026-11")
    # 21 × 0.1 h × $0.05 = $0.105 -> $0.11 per user (half up); the total rounds once: 7 × 0.105 = $0.735 -> $0.74
    assert (e.per_user, e.total) == (D("0.11"), D("0.74"))


@pytest.mark.parametrize("args, message", [
    ((10, 25, 0, 1, "2026-11"), "hours per weekday must be at most 24, got 25"),
    ((10, 8, -1, 1, "2026-11"), "hours per weekend day must be a number >= 0, got -1"),
    ((10, 8, 0, "abc", "2026-11"), "price per hour must be a number >= 0, got 'abc'"),
    ((-1, 8, 0, 1, "2026-11"), "users must be >= 0, got -1"),
    ((True, 8, 0, 1, "2026-11"), "users must be a number of users or a list of names, got True"),
    (("alice", 8, 0, 1, "2026-11"), "users must be a number of users or a list of names, got 'alice'"),
    ((2.5, 8, 0, 1, "2026-11"), "users must be a number of users or a list of names, got 2.5"),
    ((1, 8, 0, 1, "2026-W47"), "period '2026-W47' is weekly, but budgets here are monthly"),
    ((1, 8, 0, 1, 5), "period_start must be a date, a datetime or 'YYYY-MM', got 5"),
])
def test_estimate_refuses(args, message):
    with pytest.raises(ValueError) as e:
        estimate(*args)
    assert str(e.value) == message
