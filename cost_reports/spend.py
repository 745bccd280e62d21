"""Spend per user and period, summed by the database: what a budget check and the admin report read.

A period's spend is split in two disjoint parts:

* closed spans lying wholly inside the period: their recorded ``cost`` is
  summed by the database, exactly (:func:`cost_reports.models.money_sum`);
* open spans and spans crossing a boundary of the period, few: fetched and
  clipped in Python (open ones accrue up to ``now``), unrounded.

The result equals :func:`cost_reports.spans.spend_of` over the spans of
:func:`cost_reports.ledger.spans_in`, to the millionth of a dollar, without
loading every span. One user's spend reads two index ranges of that user's
spans of the period (``ix_cost_spans_user_start`` / ``ix_cost_spans_user_end``),
whatever the length of the ledger's history. Statements are built once (Core,
bound parameters) so a check spends its time in the database, not in building SQL.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, bindparam, or_, select, union_all
from sqlalchemy.orm import Session

from .models import Span, money_sum, money_total
from .money import stored, usage_cost
from .periods import Period

_T = Span.__table__
_C = _T.c
_EDGE_COLUMNS = (_C.user, _C.start, _C.end, _C.rate, _C.unit, _C.quantity)
_BY_START, _BY_END = "ix_cost_spans_user_start", "ix_cost_spans_user_end"


def _inside(ps, pe):
    """Closed spans wholly inside ``[ps, pe)``: their recorded cost counts as it is."""
    return and_(_C.start >= ps, _C.end.is_not(None), _C.end <= pe)


def _open(pe):
    return and_(_C.end.is_(None), _C.start < pe)


def _across_start(ps):
    return and_(_C.end > ps, _C.start < ps)


def _across_end(ps, pe):
    return and_(_C.start >= ps, _C.start < pe, _C.end > pe)


def _hinted(index: str):
    """A select of the edge columns of one user's spans that SQLite reads through ``index``."""
    return select(*_EDGE_COLUMNS).with_hint(_T, f"INDEXED BY {index}", "sqlite").where(_C.user == bindparam("user"))


_cache: dict[str, tuple] = {}


def _statements(dialect: str) -> tuple:
    """(inside sum of one user, edge rows of one user, inside sums by user) for ``dialect``, built once."""
    if dialect not in _cache:
        ps, pe = bindparam("ps", type_=_C.start.type), bindparam("pe", type_=_C.start.type)
        inside_one = (select(money_sum(_C.cost, dialect)).with_hint(_T, f"INDEXED BY {_BY_START}", "sqlite")
                      .where(_C.user == bindparam("user"), _inside(ps, pe)))
        edges_one = union_all(_hinted(_BY_END).where(_open(pe)), _hinted(_BY_END).where(_across_start(ps)),
                              _hinted(_BY_START).where(_across_end(ps, pe)))
        inside_all = select(_C.user, money_sum(_C.cost, dialect)).where(_inside(ps, pe)).group_by(_C.user)
        _cache[dialect] = (inside_one, edges_one, inside_all)
    return _cache[dialect]


def _edges_all(period: Period):
    """Edge rows of every user: open, or crossing a boundary of ``period`` (disjoint from the inside ones)."""
    ps, pe = period.start, period.end
    return select(*_EDGE_COLUMNS).where(or_(_open(pe), _across_start(ps), _across_end(ps, pe)))


def _clip(rows, period: Period, now: datetime) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for user, start, end, rate, unit, quantity in rows:
        a, b = max(start, period.start), min(end if end is not None else now, period.end)
        out[user] += usage_cost(a, b, rate, unit, quantity) if b > a else Decimal(0)  # user listed even at 0
    return out


def spend_in(session: Session, user: str, period: Period, now: datetime) -> Decimal:
    """Spend of ``user`` in ``period`` (6 decimals): closed spans, plus open ones accrued to ``now``, clipped."""
    dialect = session.get_bind().dialect.name
    inside_one, edges_one, _ = _statements(dialect)
    params = {"user": user, "ps": period.start, "pe": period.end}
    inside = money_total(session.execute(inside_one, params).scalar(), dialect)
    return stored(inside + _clip(session.execute(edges_one, params), period, now).get(user, Decimal(0)))


def unrounded_by_user_in(session: Session, period: Period, now: datetime) -> dict[str, Decimal]:
    """Spend in ``period`` of every user with a span overlapping it, unrounded (inside sums are exact)."""
    dialect = session.get_bind().dialect.name
    _, _, inside_all = _statements(dialect)
    rows = session.execute(inside_all, {"ps": period.start, "pe": period.end})
    out = {u: money_total(v, dialect) for u, v in rows}
    for u, extra in _clip(session.execute(_edges_all(period)), period, now).items():
        out[u] = out.get(u, Decimal(0)) + extra
    return out


def spend_by_user_in(session: Session, period: Period, now: datetime) -> dict[str, Decimal]:
    """Spend of every user with a span overlapping ``period`` (6 decimals each), users sorted."""
    out = unrounded_by_user_in(session, period, now)
    return {u: stored(out[u]) for u in sorted(out)}


def total_in(session: Session, period: Period, now: datetime) -> Decimal:
    """Spend of everyone in ``period`` (6 decimals, rounded once)."""
    return stored(sum(unrounded_by_user_in(session, period, now).values(), Decimal(0)))
