"""Reserve, then settle: money set aside for a spawn before the server starts.

``reserve(user, amount, ttl)`` checks, under the user's lock, that

    budget - spend this period - active reservations >= amount

and records a reservation, or raises :class:`BudgetExceeded`. When the span
actually opens the caller ``settle``-s the reservation (its money is now
counted as spend by the ledger); if the spawn fails it ``release``-s it.
A reservation nobody settles or releases stops counting at ``expires_at``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from .budget_store import BudgetStore, budget_in
from .budgets import EffectiveBudget
from .ledger import spend_in
from .models import Reservation
from .money import cents, stored, to_amount
from .periods import Period, period_bounds

ACTIVE, SETTLED, RELEASED = "active", "settled", "released"


class BudgetExceeded(Exception):
    """A reservation that does not fit. Attributes: user, requested, remaining, budget, spent, reserved, period."""

    def __init__(self, user: str, requested: Decimal, remaining: "Remaining"):
        self.user = user
        self.requested = requested
        self.remaining = remaining.remaining
        self.budget = remaining.budget.total
        self.spent = remaining.spent
        self.reserved = remaining.reserved
        self.period = remaining.period
        super().__init__(
            f"budget exceeded for {user}: ${cents(max(self.remaining, Decimal(0)))} remaining in {self.period.label} "
            f"(budget ${cents(self.budget)}, spent ${cents(self.spent)}, reserved ${cents(self.reserved)}), "
            f"${cents(requested)} asked"
        )


class ReservationError(Exception):
    """An unknown reservation, or one already settled/released the other way."""


@dataclass(frozen=True)
class ReservationRecord:
    id: str
    user: str
    amount: Decimal
    created_at: datetime
    expires_at: datetime
    state: str
    span_id: int | None
    closed_at: datetime | None

    def counts_at(self, now: datetime) -> bool:
        """Whether it still holds money at ``now``: active and not expired."""
        return self.state == ACTIVE and now < self.expires_at


@dataclass(frozen=True)
class Remaining:
    """What is left for a user in ``period``: ``budget.total - spent - reserved`` (may be < 0)."""

    user: str
    period: Period
    budget: EffectiveBudget
    spent: Decimal
    reserved: Decimal
    remaining: Decimal


def _record(r: Reservation) -> ReservationRecord:
    return ReservationRecord(r.id, r.user, r.amount, r.created_at, r.expires_at, r.state, r.span_id, r.closed_at)


_R = Reservation.__table__.c
_INSERT = insert(Reservation.__table__)
_HELD = select(_R.amount).where(_R.user == bindparam("user"), _R.state == ACTIVE, _R.expires_at > bindparam("now"))


def reserved_in(session: Session, user: str, now: datetime) -> Decimal:
    """Money held by ``user``'s active, unexpired reservations."""
    return sum(session.scalars(_HELD, {"user": user, "now": now}), Decimal(0))


def _ttl(ttl) -> timedelta:
    t = ttl if isinstance(ttl, timedelta) else timedelta(seconds=float(to_amount(ttl, "reservation ttl")))
    if t <= timedelta(0):
        raise ValueError(f"reservation ttl must be > 0, got {t}")
    return t


class Reservations:
    """Reservations against the budgets of a :class:`BudgetStore`, spend from the same database."""

    def __init__(self, budgets: BudgetStore):
        self.budgets = budgets
        self.db = budgets.db

    def remaining_in(self, session: Session, user: str, groups: Iterable[str], now: datetime) -> Remaining:
        period = period_bounds(self.budgets.policy.period, now)
        budget = budget_in(session, self.budgets.policy, user, groups, now)
        spent = spend_in(session, user, period, now)
        reserved = reserved_in(session, user, now)
        return Remaining(user, period, budget, spent, reserved, stored(budget.total - spent - reserved))

    def remaining(self, user: str, groups: Iterable[str] = ()) -> Remaining:
        """Budget left for ``user`` now, after spend and active reservations."""
        with self.db.read() as s:
            return self.remaining_in(s, user, groups, self.db.clock.now())

    def reserve(self, user: str, amount, ttl, groups: Iterable[str] = ()) -> str:
        """Set ``amount`` aside for ``user`` for ``ttl`` (timedelta or seconds); returns the reservation id.

        Raises :class:`BudgetExceeded` (nothing written) when it does not fit,
        ValueError for a negative or non-numeric amount or a ttl <= 0.
        """
        amount = stored(to_amount(amount, f"reservation for user {user!r}"))
        ttl = _ttl(ttl)
        with self.db.write(lock_user=user) as s:
            now = self.db.clock.now()
            left = self.remaining_in(s, user, groups, now)
            if left.remaining < amount:
                raise BudgetExceeded(user, amount, left)
            rid = str(uuid.uuid4())
            s.execute(_INSERT, {"id": rid, "user": user, "amount": amount, "created_at": now,
                                "expires_at": now + ttl, "state": ACTIVE})
            return rid

    def _finish(self, reservation_id: str, state: str, span_id: int | None) -> ReservationRecord:
        # Settling or releasing only ever frees money, so the reservation's own row lock is enough
        # (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE holds the database).
        with self.db.write() as s:
            r = s.get(Reservation, reservation_id, with_for_update=True)
            if r is None:
                raise ReservationError(f"no reservation {reservation_id!r}")
            if r.state == state:
                return _record(r)
            if r.state != ACTIVE:
                raise ReservationError(f"reservation {reservation_id} is already {r.state}, cannot mark it {state}")
            r.state, r.closed_at = state, self.db.clock.now()
            if span_id is not None:
                r.span_id = span_id
            return _record(r)

    def settle(self, reservation_id: str, span_id: int | None = None) -> ReservationRecord:
        """The span opened: the reservation stops holding money (the ledger counts the spend). Idempotent."""
        return self._finish(reservation_id, SETTLED, span_id)

    def release(self, reservation_id: str) -> ReservationRecord:
        """The spawn did not happen: give the money back. Idempotent."""
        return self._finish(reservation_id, RELEASED, None)

    def active(self, user: str | None = None) -> list[ReservationRecord]:
        """Reservations that hold money now."""
        now = self.db.clock.now()
        q = select(Reservation).where(Reservation.state == ACTIVE, Reservation.expires_at > now)
        if user is not None:
            q = q.where(Reservation.user == user)
        with self.db.read() as s:
            return [_record(r) for r in s.scalars(q.order_by(Reservation.created_at))]
