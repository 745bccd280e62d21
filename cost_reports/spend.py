"""Spend per user and period, summed by the database: what a budget check and the admin report read.

A period's spend is split in two disjoint parts:

* closed spans lying wholly inside the period: their recorded ``cost`` is
  summed by the database, exactly (:func:`cost_reports.models.money_sum`);
* open spans and spans crossing a boundary of the period, few: fetched and
  clipped in Python (open ones accrue up to ``now``), unrounded.

The result equals :func:`cost_reports.spans.spend_of` over the spans of
:func:`cost_reports.ledger.spans_in`, to the millionth of a dollar, without
loading every span: one user's spend reads index ranges of that user's spans
(``ix_cost_spans_user_start`` / ``ix_cost_spans_user_end``, see
:func:`_statements`). Statements are built once (Core, bound parameters), so a
budget check spends its time in the database, not in building SQL.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, bindparam, select, union_all
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

from .models import Span, money_sum, money_total
from .money import stored, usage_cost
from .periods import Period

_T = Span.__table__
_C = _T.c
_EDGE_COLUMNS = (_C.user, _C.start, _C.end, _C.rate, _C.unit, _C.quantity)


def _plain(column, dialect: str):
    """``column`` in a term SQLite must not use an index for (unary "+", a no-op on any value); as is elsewhere."""
    if dialect != "sqlite":
        return column
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def _inside(ps, pe, dialect: str = ""):
    """Closed spans wholly inside ``[ps, pe)``: their recorded cost counts as it is.

    ``start < pe`` follows from ``end <= pe``; it bounds the range read from ``ix_cost_spans_user_start``.
    """
    end = _plain(_C.end, dialect)
    return and_(_C.start >= ps, _C.start < pe, end.is_not(None), end <= pe)


def _open(pe, dialect: str = ""):
    return and_(_C.end.is_(None), _plain(_C.start, dialect) < pe)


def _across_start(ps, dialect: str = ""):
    return and_(_C.end > ps, _plain(_C.start, dialect) < ps)


def _across_end(ps, pe, dialect: str = ""):
    start = _plain(_C.start, dialect)
    return and_(_C.end > pe, start >= ps, start < pe)


_cache: dict[str, tuple] = {}


def _statements(dialect: str) -> tuple:
    """(inside sum of one user, edge rows of one user, inside sums by user, edge rows of all) for ``dialect``.

    Built once per dialect, with bound parameters ``user``, ``ps`` and ``pe``.
    On SQLite the terms are written so that each part reads one index range,
    with or without ANALYZE statistics (unary "+" keeps the planner off the
    other column): inside sums through the start indexes (the spans that began
    in the period; covering, so the table is not read), the edges through the
    end indexes: open spans (``end`` NULL), spans crossing the period's start
    (those that ended after it began: for the current period, its own spans)
    and spans crossing its end (those ending after it: for the current period,
    none).
    """
    if dialect not in _cache:
        ps, pe, user = bindparam("ps", type_=_C.start.type), bindparam("pe", type_=_C.start.type), bindparam("user")
        edge = select(*_EDGE_COLUMNS)

        def edges(q):
            return union_all(q.where(_open(pe, dialect)), q.where(_across_start(ps, dialect)),
                             q.where(_across_end(ps, pe, dialect)))

        _cache[dialect] = (
            select(money_sum(_C.cost, dialect)).where(_C.user == user, _inside(ps, pe, dialect)),
            edges(edge.where(_C.user == user)),
            select(_C.user, money_sum(_C.cost, dialect)).where(_inside(ps, pe, dialect)).group_by(_C.user),
            edges(edge),
        )
    return _cache[dialect]


def _clip(rows, period: Period, now: datetime) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for user, start, end, rate, unit, quantity in rows:
        a, b = max(start, period.start), min(end if end is not None else now, period.end)
        out[user] += usage_cost(a, b, rate, unit, quantity) if b > a else Decimal(0)  # user listed even at 0
    return out


def spend_in(session: Session, user: str, period: Period, now: datetime) -> Decimal:
    """Spend of ``user`` in ``period`` (6 decimals): closed spans, plus open ones accrued to ``now``, clipped."""
    dialect = session.get_bind().dialect.name
    inside_one, edges_one, _, _ = _statements(dialect)
    params = {"user": user, "ps": period.start, "pe": period.end}
    inside = money_total(session.execute(inside_one, params).scalar(), dialect)
    return stored(inside + _clip(session.execute(edges_one, params), period, now).get(user, Decimal(0)))


def unrounded_by_user_in(session: Session, period: Period, now: datetime) -> dict[str, Decimal]:
    """Spend in ``period`` of every user with a span overlapping it, unrounded (inside sums are exact)."""
    dialect = session.get_bind().dialect.name
    _, _, inside_all, edges_all = _statements(dialect)
    params = {"ps": period.start, "pe": period.end}
    out = {u: money_total(v, dialect) for u, v in session.execute(inside_all, params)}
    for u, extra in _clip(session.execute(edges_all, params), period, now).items():
        out[u] = out.get(u, Decimal(0)) + extra
    return out


def spend_by_user_in(session: Session, period: Period, now: datetime) -> dict[str, Decimal]:
    """Spend of every user with a span overlapping ``period`` (6 decimals each), users sorted."""
    out = unrounded_by_user_in(session, period, now)
    return {u: stored(out[u]) for u in sorted(out)}


def total_in(session: Session, period: Period, now: datetime) -> Decimal:
    """Spend of everyone in ``period`` (6 decimals, rounded once)."""
    return stored(sum(unrounded_by_user_in(session, period, now).values(), Decimal(0)))
