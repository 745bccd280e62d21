"""Money arithmetic: exact ``Decimal``, never float.

* Amounts coming from YAML or forms go through :func:`to_amount`, which
  refuses non-numbers, NaN, infinities, amounts of :data:`MAX_AMOUNT` or more
  (the ledger's NUMERIC(18, 6) holds 12 integer digits) and (unless allowed)
  negatives with a ValueError naming what was being set.
* The ledger keeps 6 decimals (:data:`STORE_QUANTUM`); reports round to the
  cent (:func:`cents`, half up: 1.425 -> 1.43).
* :func:`usage_cost` is the cost of a stretch of use: exact integer
  microseconds times the rate, divided once at the end.

Units (see :data:`UNIT_OF_KIND`): compute is charged per hour; storage per
GB-month, where a month is :data:`HOURS_PER_MONTH` = 730 hours (365 × 24 / 12,
AWS's convention), so storage cost grows linearly with time and a span cut at a
period boundary costs exactly the sum of its pieces.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

STORE_QUANTUM = Decimal("0.000001")
CENT = Decimal("0.01")
MAX_AMOUNT = Decimal(10**12)
HOURS_PER_MONTH = Decimal(730)
MICROS_PER_HOUR = 3_600_000_000

KINDS = ("server", "dask-scheduler", "dask-worker", "storage")
HOUR = "hour"
GB_MONTH = "GB-month"
UNIT_OF_KIND = {"server": HOUR, "dask-scheduler": HOUR, "dask-worker": HOUR, "storage": GB_MONTH}


def to_amount(value, what: str = "amount", *, allow_negative: bool = False) -> Decimal:
    """``value`` (int, str, Decimal or float from YAML) as a Decimal, validated.

    Floats go through ``str`` (``0.1`` -> ``Decimal("0.1")``), so YAML prices stay
    what the admin wrote. Raises ValueError: "<what> must be a number >= 0, got 'abc'".
    """
    expect = "a number" if allow_negative else "a number >= 0"
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} must be {expect}, got {value!r}")
    try:
        if isinstance(value, float):
            d = Decimal(repr(value))
        elif isinstance(value, (int, Decimal)):
            d = Decimal(value)
        elif isinstance(value, str):
            d = Decimal(value.strip().lstrip("$").strip())
        else:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise ValueError(f"{what} must be {expect}, got {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"{what} must be {expect}, got {value!r}")
    if d < 0 and not allow_negative:
        raise ValueError(f"{what} must be {expect}, got {value!r}")
    if abs(d) >= MAX_AMOUNT or abs(stored(d)) >= MAX_AMOUNT:
        raise ValueError(f"{what} must be less than {MAX_AMOUNT}, got {value!r}")
    return abs(d) if d.is_zero() else d  # no "-0"


def stored(amount: Decimal) -> Decimal:
    """``amount`` at the ledger's precision (6 decimals, half up)."""
    return amount.quantize(STORE_QUANTUM, rounding=ROUND_HALF_UP)


def cents(amount: Decimal) -> Decimal:
    """``amount`` rounded to the cent, half up (how reports show money)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def micros(delta: timedelta) -> int:
    """A timedelta as exact integer microseconds."""
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def hours(delta: timedelta) -> Decimal:
    """A timedelta in hours (Decimal, 28 significant digits)."""
    return Decimal(micros(delta)) / MICROS_PER_HOUR


def usage_cost(start: datetime, end: datetime, rate: Decimal, unit: str, quantity: Decimal = Decimal(1)) -> Decimal:
    """Cost of using ``quantity`` units at ``rate`` from ``start`` to ``end`` (unrounded).

    ``unit`` "hour": hours × rate × quantity; "GB-month": GB × rate × hours / 730.
    An empty or reversed stretch costs 0.
    """
    span = micros(end - start)
    if span <= 0:
        return Decimal(0)
    numerator = Decimal(span) * rate * quantity
    if unit == HOUR:
        return numerator / MICROS_PER_HOUR
    if unit == GB_MONTH:
        return numerator / (MICROS_PER_HOUR * HOURS_PER_MONTH)
    raise ValueError(f"unknown unit {unit!r} (expected {HOUR!r} or {GB_MONTH!r})")
