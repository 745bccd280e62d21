"""The ledger: spans of use, opened and closed, and spend per user and period.

>>> ledger = Ledger(CostDB("sqlite:///costs.sqlite", clock))
>>> span = ledger.open_span("alice", "server", "", Decimal("1.21"), profile="gpu")
>>> ledger.close_span(span.id)
>>> ledger.spend("alice", "2026-11")

"Now" always comes from the database's clock. Functions ending in ``_in``
work inside a session the caller holds (reservations and reconcile use them
under the user's lock).

Spend is summed by the database (:mod:`cost_reports.spend`, whose functions
are re-exported here); it equals :func:`cost_reports.spans.spend_of` over
:func:`spans_in`, to the millionth of a dollar.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .clock import as_utc
from .db import CostDB
from .models import Span
from .money import KINDS, UNIT_OF_KIND, stored, to_amount, usage_cost
from .periods import Period, parse_period
from .spans import SpanRecord
from .spend import spend_by_user_in, spend_in, total_in

__all__ = ["Ledger", "record", "find_open_in", "open_span_in", "close_in", "spans_in", "spend_in",
           "spend_by_user_in", "total_in"]


def record(row: Span) -> SpanRecord:
    """A detached, immutable copy of an ORM span."""
    return SpanRecord(
        id=row.id, user=row.user, kind=row.kind, profile=row.profile, resource_id=row.resource_id,
        start=row.start, end=row.end, rate=row.rate, unit=row.unit, quantity=row.quantity,
        cost=row.cost, note=row.note,
    )


def _period(period: Period | str) -> Period:
    return period if isinstance(period, Period) else parse_period(period)


# ------------------------------------------------------------ in a session


def find_open_in(session: Session, user: str, kind: str, resource_id: str) -> Span | None:
    """The open span of one resource, if any."""
    q = select(Span).where(Span.user == user, Span.kind == kind, Span.resource_id == resource_id, Span.end.is_(None))
    return session.scalars(q.order_by(Span.id)).first()


def open_span_in(session: Session, user: str, kind: str, resource_id: str, rate, *, profile: str = "",
                 quantity=1, start: datetime, note: str = "") -> Span:
    """Open a span, or return the one already open for this resource (then nothing changes)."""
    if kind not in KINDS:
        raise ValueError(f"unknown resource kind {kind!r} (expected one of: {', '.join(KINDS)})")
    if not user:
        raise ValueError("a span needs a user")
    rate = stored(to_amount(rate, f"price of {kind} {resource_id!r}"))
    quantity = stored(to_amount(quantity, "size in GB" if kind == "storage" else "quantity"))
    if quantity == 0:
        raise ValueError(f"{'size in GB' if kind == 'storage' else 'quantity'} must be > 0")
    start = as_utc(start, "span start")
    existing = find_open_in(session, user, kind, resource_id)
    if existing is not None:
        return existing
    row = Span(user=user, kind=kind, profile=profile, resource_id=resource_id, start=start, end=None,
               rate=rate, unit=UNIT_OF_KIND[kind], quantity=quantity, cost=None, note=note)
    session.add(row)
    session.flush()
    return row


def close_in(row: Span, end: datetime, note: str | None = None) -> Span:
    """Close an open span at ``end`` and record its cost; a closed span is left as it is."""
    if row.end is not None:
        return row
    end = as_utc(end, "span end")
    if end < row.start:
        raise ValueError(f"span {row.id} cannot end at {end.isoformat()}, before its start {row.start.isoformat()}")
    row.end = end
    row.cost = stored(usage_cost(row.start, end, row.rate, row.unit, row.quantity))
    if note:
        row.note = f"{row.note}; {note}" if row.note else note
    return row


def spans_in(session: Session, period: Period, user: str | None = None) -> list[SpanRecord]:
    """Spans that overlap ``period`` (open ones included), oldest first."""
    q = select(Span).where(Span.start < period.end, or_(Span.end.is_(None), Span.end > period.start))
    if user is not None:
        q = q.where(Span.user == user)
    return [record(r) for r in session.scalars(q.order_by(Span.start, Span.id))]


# ------------------------------------------------------------ the store


class Ledger:
    """Spans and spend, stored in a :class:`CostDB`."""

    def __init__(self, db: CostDB):
        self.db = db

    @property
    def clock(self):
        return self.db.clock

    def open_span(self, user: str, kind: str, resource_id: str, rate, *, profile: str = "", quantity=1,
                  start: datetime | None = None, note: str = "") -> SpanRecord:
        """Record that ``user`` started using a resource; returns the span.

        ``kind``: "server", "dask-scheduler", "dask-worker" (``rate`` = price per
        hour) or "storage" (``rate`` = price per GB-month, ``quantity`` = GB).
        ``start`` defaults to now. If a span is already open for the same user,
        kind and ``resource_id``, that one is returned and nothing is written.
        """
        with self.db.write(lock_user=user) as s:
            return record(open_span_in(s, user, kind, resource_id, rate, profile=profile, quantity=quantity,
                                       start=start or self.clock.now(), note=note))

    def close_span(self, span_id: int, end: datetime | None = None, note: str | None = None) -> SpanRecord:
        """Close span ``span_id`` at ``end`` (default now); closing a closed span changes nothing."""
        with self.db.write() as s:
            row = s.get(Span, span_id)
            if row is None:
                raise LookupError(f"no span {span_id} in the ledger")
            return record(close_in(row, end or self.clock.now(), note))

    def close_resource(self, user: str, kind: str, resource_id: str, end: datetime | None = None,
                       note: str | None = None) -> SpanRecord | None:
        """Close the open span of a resource (e.g. when a server stops); None if none was open."""
        with self.db.write(lock_user=user) as s:
            row = find_open_in(s, user, kind, resource_id)
            return None if row is None else record(close_in(row, end or self.clock.now(), note))

    def open_spans(self, user: str | None = None, kind: str | None = None) -> list[SpanRecord]:
        """Spans still open, oldest first."""
        q = select(Span).where(Span.end.is_(None))
        if user is not None:
            q = q.where(Span.user == user)
        if kind is not None:
            q = q.where(Span.kind == kind)
        with self.db.read() as s:
            return [record(r) for r in s.scalars(q.order_by(Span.start, Span.id))]

    def spans(self, period: Period | str, user: str | None = None) -> list[SpanRecord]:
        """Spans overlapping ``period`` (a Period or a label like "2026-11"), of one user or all."""
        with self.db.read() as s:
            return spans_in(s, _period(period), user)

    def spend(self, user: str, period: Period | str) -> Decimal:
        """What ``user`` spent in ``period``, open spans accrued up to now (6 decimals)."""
        p = _period(period)
        with self.db.read() as s:
            return spend_in(s, user, p, self.clock.now())

    def spend_by_user(self, period: Period | str) -> dict[str, Decimal]:
        """Spend of every user with a span in ``period``, by user name (sorted); computed in the database."""
        p = _period(period)
        with self.db.read() as s:
            return spend_by_user_in(s, p, self.clock.now())

    def total(self, period: Period | str) -> Decimal:
        """Spend of everyone in ``period`` (6 decimals); computed in the database."""
        p = _period(period)
        with self.db.read() as s:
            return total_in(s, p, self.clock.now())
