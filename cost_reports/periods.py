"""Budget periods: calendar months (the default) or ISO weeks, in UTC.

A :class:`Period` is the half-open interval ``[start, end)``. Labels are
``"2026-11"`` for a month and ``"2026-W47"`` for an ISO week (Monday to Sunday).
All functions are pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from .clock import UTC, as_utc

MONTHLY = "monthly"
WEEKLY = "weekly"
PERIOD_KINDS = (MONTHLY, WEEKLY)

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True)
class Period:
    """One budget period: ``kind`` ("monthly"/"weekly"), ``start`` (inclusive), ``end`` (exclusive), ``label``."""

    kind: str
    start: datetime
    end: datetime
    label: str

    def __contains__(self, when: datetime) -> bool:
        return self.start <= when < self.end

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def days(self) -> list[date]:
        """The calendar days (UTC) of the period, in order."""
        first = self.start.date()
        return [first + timedelta(days=i) for i in range(self.length.days)]

    def next(self) -> "Period":
        return period_bounds(self.kind, self.end)

    def previous(self) -> "Period":
        return period_bounds(self.kind, self.start - timedelta(microseconds=1))

    def __str__(self) -> str:
        return self.label


def _check_kind(kind: str) -> str:
    if kind not in PERIOD_KINDS:
        raise ValueError(f"unknown budget period kind {kind!r} (expected 'monthly' or 'weekly')")
    return kind


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def month_period(year: int, month: int) -> Period:
    start = _midnight(date(year, month, 1))
    end = _midnight(date(year + month // 12, month % 12 + 1, 1))
    return Period(MONTHLY, start, end, f"{year:04d}-{month:02d}")


def week_period(year: int, week: int) -> Period:
    start = _midnight(date.fromisocalendar(year, week, 1))
    return Period(WEEKLY, start, start + timedelta(days=7), f"{year:04d}-W{week:02d}")


def period_bounds(period_kind: str, when: datetime) -> Period:
    """The period of kind ``period_kind`` that contains ``when`` (aware datetime)."""
    _check_kind(period_kind)
    when = as_utc(when, "period time")
    if period_kind == MONTHLY:
        return month_period(when.year, when.month)
    year, week, _ = when.date().isocalendar()
    return week_period(year, week)


def _weeks_in(year: int) -> int:
    return date(year, 12, 28).isocalendar()[1]


def parse_period(text: str, period_kind: str | None = None) -> Period:
    """``"2026-11"`` -> that month, ``"2026-W47"`` -> that ISO week.

    With ``period_kind`` given, the label must be of that kind. Raises
    ValueError with the accepted forms for anything else.
    """
    if period_kind is not None:
        _check_kind(period_kind)
    forms = "expected YYYY-MM for a month, e.g. 2026-11, or YYYY-Www for an ISO week, e.g. 2026-W47"
    if not isinstance(text, str):
        raise ValueError(f"unknown period {text!r} ({forms})")
    s = text.strip()
    m = _MONTH_RE.match(s)
    w = _WEEK_RE.match(s)
    if m:
        year, month = int(m[1]), int(m[2])
        if not 1 <= month <= 12:
            raise ValueError(f"unknown period {text!r}: month {month} is not 01..12")
        if year < 1970:
            raise ValueError(f"unknown period {text!r}: year before 1970")
        found = month_period(year, month)
    elif w:
        year, week = int(w[1]), int(w[2])
        if year < 1970:
            raise ValueError(f"unknown period {text!r}: year before 1970")
        if not 1 <= week <= _weeks_in(year):
            raise ValueError(f"unknown period {text!r}: {year} has ISO weeks 01..{_weeks_in(year)}")
        found = week_period(year, week)
    else:
        raise ValueError(f"unknown period {text!r} ({forms})")
    if period_kind is not None and found.kind != period_kind:
        raise ValueError(f"period {text!r} is {found.kind}, but budgets here are {period_kind}")
    return found
