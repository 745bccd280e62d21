"""Budget policy, pure: which budget applies to a user.

Order, first match wins:

1. a user budget: set by an admin at run time (database), else ``budgets.users``;
2. the largest budget of the user's groups, each group's budget being the
   admin's run-time one (database), else ``budgets.groups``;
3. ``budgets.default`` ($300 unless set).

Extensions granted by admins are added while they are valid
(``granted_at <= when < until``). The database side (overrides, audit log,
extensions) is :mod:`cost_reports.budget_store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .money import to_amount
from .periods import MONTHLY, PERIOD_KINDS

SCOPES = ("user", "group")
DEFAULT_BUDGET = Decimal(300)


def validate_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown budget scope {scope!r} (expected 'user' or 'group')")
    return scope


def validate_budget(value, scope: str = "default", name: str = "") -> Decimal:
    """A budget amount as Decimal; ValueError naming the budget if negative or not a number."""
    what = "default budget" if scope == "default" else f"budget of {scope} {name!r}"
    return to_amount(value, what)


MAX_EXTENSION_DAYS = 366  # an extension ends within a year of being granted

@dataclass(frozen=True)
class BudgetPolicy:
    """The budgets of posehub.yaml (``budgets:``), validated, as Decimals."""

    default: Decimal = DEFAULT_BUDGET
    groups: Mapping[str, Decimal] = field(default_factory=dict)
    users: Mapping[str, Decimal] = field(default_factory=dict)
    period: str = MONTHLY

    @classmethod
    def from_config(cls, cfg) -> "BudgetPolicy":
        """From a ``PoseHubConfig`` (or its ``data`` dict); missing keys take the schema defaults."""
        data = getattr(cfg, "data", cfg) or {}
        b = data.get("budgets") or {}
        period = b.get("period", MONTHLY)
        if period not in PERIOD_KINDS:
            raise ValueError(f"budgets.period must be 'monthly' or 'weekly', got {period!r}")
        return cls(
            default=validate_budget(b.get("default", DEFAULT_BUDGET)),
            groups={g: validate_budget(v, "group", g) for g, v in (b.get("groups") or {}).items()},
            users={u: validate_budget(v, "user", u) for u, v in (b.get("users") or {}).items()},
            period=period,
        )


@dataclass(frozen=True)
class Overrides:
    """Budgets set by admins at run time (from the database), by name."""

    users: Mapping[str, Decimal] = field(default_factory=dict)
    groups: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class Extension:
    """Extra budget for ``user`` from ``granted_at`` until ``until`` (exclusive)."""

    user: str
    amount: Decimal
    granted_at: datetime
    until: datetime
    granted_by: str = ""
    reason: str = ""
    id: int | None = None

    def valid_at(self, when: datetime) -> bool:
        return self.granted_at <= when < self.until


@dataclass(frozen=True)
class EffectiveBudget:
    """The budget that applies: ``base`` (from ``source``) plus valid ``extensions`` = ``total``."""

    user: str
    base: Decimal
    source: str
    extensions: Decimal
    total: Decimal


def base_budget(user: str, groups: Iterable[str], policy: BudgetPolicy,
                overrides: Overrides = Overrides()) -> tuple[Decimal, str]:
    """(amount, where it comes from) before extensions; see the module docstring for the order."""
    if user in overrides.users:
        return overrides.users[user], f"user {user} (set by an admin)"
    if user in policy.users:
        return policy.users[user], f"user {user} (posehub.yaml)"
    best: tuple[Decimal, str] | None = None
    for g in sorted(set(groups)):
        if g in overrides.groups:
            cand = (overrides.groups[g], f"group {g} (set by an admin)")
        elif g in policy.groups:
            cand = (policy.groups[g], f"group {g} (posehub.yaml)")
        else:
            continue
        if best is None or cand[0] > best[0]:
            best = cand
    return best if best is not None else (policy.default, "default")


def effective_budget(user: str, groups: Iterable[str], policy: BudgetPolicy, overrides: Overrides = Overrides(),
                     extensions: Iterable[Extension] = (), when: datetime | None = None) -> EffectiveBudget:
    """The budget of ``user`` at ``when``: base budget plus extensions valid then (all if ``when`` is None)."""
    base, source = base_budget(user, groups, policy, overrides)
    extra = sum((e.amount for e in extensions if e.user == user and (when is None or e.valid_at(when))), Decimal(0))
    return EffectiveBudget(user=user, base=base, source=source, extensions=extra, total=base + extra)
