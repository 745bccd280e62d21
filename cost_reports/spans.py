"""Plain span records and the pure arithmetic of spend over them.

:class:`SpanRecord` is what the ledger hands out (no database session behind
it); reports and forecasts are computed from lists of them by the pure
functions here and in :mod:`cost_reports.reports`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from .clock import UTC
from .money import stored, usage_cost
from .periods import Period


@dataclass(frozen=True)
class SpanRecord:
    """One span of use, as stored. ``end`` is None while open; ``cost`` is set once closed."""

    id: int
    user: str
    kind: str
    profile: str
    resource_id: str
    start: datetime
    end: datetime | None
    rate: Decimal
    unit: str
    quantity: Decimal
    cost: Decimal | None
    note: str = ""

    @property
    def is_open(self) -> bool:
        return self.end is None

    def cost_between(self, lo: datetime, hi: datetime, now: datetime) -> Decimal:
        """Cost of the part of this span inside ``[lo, hi)``; an open span runs until ``now``.

        A closed span lying wholly inside counts its recorded ``cost`` (6
        decimals), so a period's spend is the sum of the ledger's cost column
        plus the pieces of open and boundary-crossing spans, computed unrounded.
        """
        if self.end is not None and self.cost is not None and lo <= self.start and self.end <= hi:
            return self.cost
        end = self.end if self.end is not None else now
        a, b = max(self.start, lo), min(end, hi)
        if b <= a:
            return Decimal(0)
        return usage_cost(a, b, self.rate, self.unit, self.quantity)


def spend_of(spans, period: Period, now: datetime) -> Decimal:
    """Total cost of ``spans`` inside ``period``, open spans accrued up to ``now`` (6 decimals)."""
    return stored(sum((s.cost_between(period.start, period.end, now) for s in spans), Decimal(0)))


def spend_by(spans, period: Period, now: datetime, key) -> dict:
    """Cost inside ``period`` grouped by ``key(span)`` (6 decimals), keys sorted."""
    out: dict = defaultdict(Decimal)
    for s in spans:
        out[key(s)] += s.cost_between(period.start, period.end, now)
    return {k: stored(out[k]) for k in sorted(out)}


def spend_by_day(spans, period: Period, now: datetime) -> dict[date, Decimal]:
    """Cost per UTC day of ``period`` (every day present, 0 where nothing ran), 6 decimals."""
    out: dict[date, Decimal] = {}
    for day in period.days():
        lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
        hi = lo + timedelta(days=1)
        out[day] = stored(sum((s.cost_between(lo, hi, now) for s in spans), Decimal(0)))
    return out
