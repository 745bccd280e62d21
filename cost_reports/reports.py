"""Reports, pure functions over span records (from :meth:`Ledger.spans`).

Money in reports is rounded to the cent (half up); sums are taken before
rounding, so a total may differ by a cent from the sum of its rounded parts.

Forecast (:func:`forecast`): linear extrapolation of the period so far,

    forecast = spent so far / elapsed fraction of the period

which is the same as "spent + average rate so far × time left". Before any
time has passed, and once the period is over, the forecast is what was spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from .budgets import DEFAULT_BUDGET, EffectiveBudget
from .clock import as_utc
from .money import cents, micros
from .periods import Period
from .spans import SpanRecord, spend_by, spend_by_day, spend_of

FORECAST_METHOD = "spent so far / elapsed fraction of the period"


def elapsed_fraction(period: Period, now: datetime) -> Decimal:
    """How much of ``period`` has passed at ``now``: 0 before it, 1 after it."""
    now = as_utc(now)
    if now <= period.start:
        return Decimal(0)
    if now >= period.end:
        return Decimal(1)
    return Decimal(micros(now - period.start)) / Decimal(micros(period.length))


def forecast(spent: Decimal, period: Period, now: datetime) -> Decimal:
    """Spend expected by the end of ``period`` at the average rate so far (unrounded)."""
    f = elapsed_fraction(period, now)
    return spent if f in (0, 1) else spent / f


def percent_used(spent: Decimal, budget: Decimal) -> Decimal | None:
    """``spent`` as a percentage of ``budget`` to one decimal; None for a zero budget."""
    if budget == 0:
        return None
    return (spent * 100 / budget).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def _amount(budget) -> Decimal:
    return budget.total if isinstance(budget, EffectiveBudget) else Decimal(budget)


def _label(span: SpanRecord) -> str:
    return span.profile or span.kind


@dataclass(frozen=True)
class UserReport:
    """One user's period: every amount in dollars, rounded to the cent."""

    user: str
    period: Period
    now: datetime
    budget: Decimal
    spent: Decimal
    remaining: Decimal
    percent_used: Decimal | None
    forecast: Decimal
    by_profile: dict[str, Decimal]  # profile slug, or the kind for spans without one (storage, dask)
    by_day: dict[date, Decimal]
    forecast_method: str = FORECAST_METHOD
    by_profile_day: dict[str, dict[date, Decimal]] = field(default_factory=dict)  # for the stacked plot


def user_report(user: str, spans: Iterable[SpanRecord], period: Period, budget, now: datetime) -> UserReport:
    """Spend of ``user`` in ``period`` by profile and by day, forecast and what is left of ``budget``."""
    mine = [s for s in spans if s.user == user]
    total = _amount(budget)
    spent = spend_of(mine, period, now)
    return UserReport(
        user=user, period=period, now=now, budget=cents(total), spent=cents(spent),
        remaining=cents(total - spent), percent_used=percent_used(spent, total),
        forecast=cents(forecast(spent, period, now)),
        by_profile={k: cents(v) for k, v in spend_by(mine, period, now, _label).items()},
        by_day={k: cents(v) for k, v in spend_by_day(mine, period, now).items()},
        by_profile_day={label: {k: cents(v) for k, v in spend_by_day([s for s in mine if _label(s) == label],
                                                                        period, now).items()}
                        for label in sorted({_label(s) for s in mine})},
    )


@dataclass(frozen=True)
class AdminRow:
    user: str
    spent: Decimal
    budget: Decimal
    remaining: Decimal
    percent_used: Decimal | None
    forecast: Decimal


@dataclass(frozen=True)
class AdminReport:
    """Every user's spend against their cap in ``period``, highest percentage first."""

    period: Period
    now: datetime
    rows: list[AdminRow]
    total_spent: Decimal
    total_budget: Decimal
    forecast_method: str = FORECAST_METHOD


def _urgency(row: AdminRow) -> Decimal:
    if row.percent_used is not None:
        return row.percent_used
    return Decimal("Infinity") if row.spent > 0 else Decimal(0)


def admin_report(spans: Iterable[SpanRecord], period: Period, budgets: Mapping[str, object], now: datetime,
                 default_budget: Decimal = DEFAULT_BUDGET) -> AdminReport:
    """One row per user in ``budgets`` or with spend in ``period``.

    ``budgets``: ``{user: Decimal or EffectiveBudget}``; users missing from it
    (e.g. deleted since) get ``default_budget``.
    """
    by_user = spend_by(spans, period, now, key=lambda s: s.user)
    return admin_report_from_spend(by_user, period, budgets, now, default_budget)


def admin_report_from_spend(by_user: Mapping[str, Decimal], period: Period, budgets: Mapping[str, object],
                            now: datetime, default_budget: Decimal = DEFAULT_BUDGET) -> AdminReport:
    """:func:`admin_report` from spend per user already summed, e.g. by :meth:`Ledger.spend_by_user`
    (the same numbers as from the spans, without loading them)."""
    rows = []
    for user in sorted(set(budgets) | set(by_user)):
        spent = by_user.get(user, Decimal(0))
        cap = _amount(budgets[user]) if user in budgets else Decimal(default_budget)
        rows.append(AdminRow(user, cents(spent), cents(cap), cents(cap - spent), percent_used(spent, cap),
                             cents(forecast(spent, period, now))))
    rows.sort(key=lambda r: (-_urgency(r), r.user))
    total = sum(by_user.values(), Decimal(0))
    caps = sum((r.budget for r in rows), Decimal(0))
    return AdminReport(period, now, rows, cents(total), cents(caps))
