"""Validation of the cost service's API and form input (pure).

Every function raises :class:`InputError` (HTTP 400) with a message that
names the field and what was expected; callers validate everything before
they write anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from .budgets import MAX_EXTENSION_DAYS
from .money import to_amount

MAX_BUDGET = Decimal(1_000_000)


class InputError(ValueError):
    """Bad input from a client: shown as is, with status 400."""


def json_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InputError("the request body must be a JSON object, e.g. {\"amount\": 250}") from None
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object, e.g. {\"amount\": 250}")
    return body


def check_fields(body: dict, allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r} (expected: {', '.join(sorted(allowed))})")


def amount(value, what: str, *, positive: bool = False, maximum: Decimal = MAX_BUDGET) -> Decimal:
    """A dollar amount >= 0 (> 0 with ``positive``), at most ``maximum``, with at most 2 decimals."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{what} is missing: give an amount in US dollars, e.g. 250")
    try:
        d = to_amount(value, what)
    except ValueError as e:
        raise InputError(str(e)) from None
    if positive and d == 0:
        raise InputError(f"{what} must be more than 0, got {value!r}")
    if d > maximum:
        raise InputError(f"{what} must be at most {maximum}, got {value!r}")
    if d != d.quantize(Decimal("0.01")):
        raise InputError(f"{what} must be in dollars and cents (at most 2 decimals), got {value!r}")
    return d


def known_name(name: str, scope: str, known: Iterable[str]) -> str:
    """A user or group that exists (on the hub or in posehub.yaml)."""
    name = (name or "").strip()
    if not name:
        raise InputError(f"a {scope} name is needed")
    if name not in set(known):
        raise InputError(f"unknown {scope} {name!r}")
    return name


def scope(value: str) -> str:
    if value not in ("user", "group"):
        raise InputError(f"unknown budget scope {value!r} (expected 'user' or 'group')")
    return value


def extension_end(now: datetime, days=None, until: str | None = None) -> datetime:
    """When an extension ends: ``days`` (1..366) from now, or an ISO time ``until`` after now."""
    if (days is None) == (until is None or until == ""):
        raise InputError("give either 'days' (how long the extension lasts) or 'until' (an ISO 8601 time)")
    if days is not None and days != "":
        try:
            n = float(days)
        except (TypeError, ValueError):
            raise InputError(f"days must be a number of days, got {days!r}") from None
        if not 0 < n <= MAX_EXTENSION_DAYS:
            raise InputError(f"days must be more than 0 and at most {MAX_EXTENSION_DAYS}, got {days!r}")
        return now + timedelta(days=n)
    try:
        end = datetime.fromisoformat(str(until).replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"until must be an ISO 8601 time such as 2026-12-01T00:00:00Z, got {until!r}") from None
    if end.tzinfo is None:
        raise InputError(f"until must include a time zone (e.g. Z for UTC), got {until!r}")
    if end <= now:
        raise InputError(f"until must be in the future, got {until!r}")
    if end > now + timedelta(days=MAX_EXTENSION_DAYS):
        raise InputError(f"until must be at most {MAX_EXTENSION_DAYS} days from now, got {until!r}")
    return end


@dataclass(frozen=True)
class BudgetChange:
    scope: str
    name: str
    amount: Decimal | None  # None: remove the run-time budget
    reason: str
