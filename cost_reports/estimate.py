"""Projection of a month's cost before it happens (``posehub cost estimate``).

Each user runs a server ``hours_weekday`` hours on each Monday–Friday and
``hours_weekend`` hours on each Saturday and Sunday of the month that contains
``period_start``, at ``price_per_hour``. The platform's own monthly costs
(``costs.fixed_monthly``: the hub's instance or the workstation, storage, on AWS
the control plane, load balancer and NAT) are spread over the users, so a
user-month compares like for like with a managed service. Pure; exact Decimal
arithmetic.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from .money import cents, to_amount
from .periods import parse_period


@dataclass(frozen=True)
class Estimate:
    """The month (``"2026-11"``), its day counts, and the cost per user and in total (to the cent)."""

    month: str
    users: int
    weekdays: int
    weekend_days: int
    hours_per_user: Decimal
    per_user: Decimal  # compute
    total: Decimal  # compute, every user
    fixed: dict  # {name: dollars a month} of the platform itself
    fixed_per_user: Decimal = Decimal(0)
    per_user_month: Decimal = Decimal(0)  # compute + the user's share of the fixed costs
    grand_total: Decimal = Decimal(0)


def day_counts(year: int, month: int) -> tuple[int, int]:
    """(weekdays, weekend days) of a month."""
    n = calendar.monthrange(year, month)[1]
    weekend = sum(1 for d in range(1, n + 1) if date(year, month, d).weekday() >= 5)
    return n - weekend, weekend


def _month(period_start) -> tuple[int, int]:
    if isinstance(period_start, str):
        p = parse_period(period_start, "monthly")
        return p.start.year, p.start.month
    if isinstance(period_start, (date, datetime)):
        return period_start.year, period_start.month
    raise ValueError(f"period_start must be a date, a datetime or 'YYYY-MM', got {period_start!r}")


def _hours(value, what: str) -> Decimal:
    h = to_amount(value, what)
    if h > 24:
        raise ValueError(f"{what} must be at most 24, got {value!r}")
    return h


def estimate(users, hours_weekday, hours_weekend, price_per_hour, period_start,
             fixed_monthly: Mapping | None = None) -> Estimate:
    """Monthly cost per user and in total.

    ``users``: a number of users or a collection of names; ``hours_weekday`` /
    ``hours_weekend``: hours per day (0–24); ``price_per_hour``: dollars;
    ``period_start``: any date or datetime in the month, or ``"2026-11"``.
    """
    if isinstance(users, int) and not isinstance(users, bool):
        n = users
    elif isinstance(users, Iterable) and not isinstance(users, (str, bytes)):
        n = len(set(users))
    else:  # a bool, a float, or a single name (whose letters are no users)
        raise ValueError(f"users must be a number of users or a list of names, got {users!r}")
    if n < 0:
        raise ValueError(f"users must be >= 0, got {users!r}")
    wd_h = _hours(hours_weekday, "hours per weekday")
    we_h = _hours(hours_weekend, "hours per weekend day")
    price = to_amount(price_per_hour, "price per hour")
    year, month = _month(period_start)
    weekdays, weekend = day_counts(year, month)
    hours = weekdays * wd_h + weekend * we_h
    per_user = hours * price
    fixed = {str(k): to_amount(v, f"fixed cost {k!r}") for k, v in (fixed_monthly or {}).items()}
    fixed_total = sum(fixed.values(), Decimal(0))
    fixed_per_user = fixed_total / n if n else fixed_total
    return Estimate(month=f"{year:04d}-{month:02d}", users=n, weekdays=weekdays, weekend_days=weekend,
                    hours_per_user=hours, per_user=cents(per_user), total=cents(per_user * n),
                    fixed={k: cents(v) for k, v in fixed.items()}, fixed_per_user=cents(fixed_per_user),
                    per_user_month=cents(per_user + fixed_per_user), grand_total=cents(per_user * n + fixed_total))
