"""Crash recovery: make the ledger agree with the servers the hub sees running.

After a hub restart the hub calls :func:`reconcile` with what is really
running. Spans left open for servers that are gone are closed at the best
known time; servers running without an open span get one from the hub's
``started`` time. Running it again changes nothing: a span is never closed
twice, and a new span never starts before the end of the previous span of the
same server, so no hour is counted twice or lost.

A running server whose open span began more than :data:`RESTART_TOLERANCE`
before the hub's ``started`` time was restarted behind the ledger's back: the
old span is closed (at its known stop time, else at ``started``) and a new one
opened from ``started``, with the profile and price of the new run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from .clock import as_utc
from .ledger import Ledger, close_in, open_span_in, record
from .models import Span
from .spans import SpanRecord

KIND = "server"
# An open span that began this much before the hub's ``started`` time belongs to an
# earlier run of the server: it is closed and a new span opened from ``started``.
RESTART_TOLERANCE = timedelta(minutes=1)


@dataclass(frozen=True)
class RunningServer:
    """A server the hub sees running. ``profile``/``price_per_hour`` may be None: then the
    server's previous span in the ledger gives them."""

    started: datetime | None
    profile: str | None = None
    price_per_hour: Decimal | float | str | None = None


@dataclass(frozen=True)
class ReconcileResult:
    closed: list[SpanRecord] = field(default_factory=list)
    opened: list[SpanRecord] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.closed or self.opened)


def _running(open_servers: Mapping[str, Mapping[str, object]]) -> dict[tuple[str, str], RunningServer]:
    out = {}
    for user, servers in open_servers.items():
        for name, value in servers.items():
            if value is None or isinstance(value, datetime):
                value = RunningServer(started=value)
            elif not isinstance(value, RunningServer):
                raise ValueError(f"open_servers[{user!r}][{name!r}]: expected a datetime, None or RunningServer")
            out[(user, name)] = value
    return out


def _last_span(s: Session, user: str, name: str, kind: str = KIND) -> Span | None:
    q = select(Span).where(Span.user == user, Span.kind == kind, Span.resource_id == name)
    return s.scalars(q.order_by(Span.start.desc(), Span.id.desc())).first()


def _open_missing(s: Session, user: str, name: str, srv: RunningServer, now: datetime, kind: str = KIND) -> Span:
    last = _last_span(s, user, name, kind)
    start = as_utc(srv.started, f"start of {user}/{name}") if srv.started else now
    if last is not None and last.end is not None and start < last.end:
        start = last.end  # never count an hour twice
    start = min(start, now)
    profile = srv.profile if srv.profile is not None else (last.profile if last else None)
    price = srv.price_per_hour if srv.price_per_hour is not None else (last.rate if last else None)
    if profile is None or price is None:
        raise ValueError(f"server {user}/{name!s} runs but has no span to take its profile and price from: "
                         "pass RunningServer(started, profile, price_per_hour)")
    return open_span_in(s, user, kind, name, price, profile=profile, start=start, note="opened by reconcile")


def reconcile(ledger: Ledger, open_servers: Mapping[str, Mapping[str, object]], now: datetime | None = None, *,
              stopped_at: Mapping[str, Mapping[str, datetime]] | None = None, kind: str = KIND) -> ReconcileResult:
    """Close spans of servers not running, open spans of running servers the ledger missed.

    ``open_servers``: ``{user: {server_name: started}}``, ``started`` a datetime,
    None (unknown: now) or a :class:`RunningServer`; the default server's name
    is "". ``stopped_at``: ``{user: {server_name: time}}``, the stop time or last
    activity of servers that are gone, used to close their spans (else ``now``,
    default the clock's now). ``kind``: the spans reconciled ("server", or
    "dask-worker" for the workers Dask Gateway runs). All in one transaction:
    on a ValueError nothing is written.
    """
    now = as_utc(now) if now is not None else ledger.clock.now()
    running = _running(open_servers)
    stopped = stopped_at or {}
    db = ledger.db
    with db.read() as s:
        open_users = set(s.scalars(select(Span.user).where(Span.kind == kind, Span.end.is_(None))))
    closed, opened = [], []
    with db.write() as s:
        for user in sorted(open_users | {u for u, _ in running}):
            db.lock(s, user)
        for row in s.scalars(select(Span).where(Span.kind == kind, Span.end.is_(None)).order_by(Span.id)).all():
            srv = running.get((row.user, row.resource_id))
            latest = now
            if srv is not None:
                started = as_utc(srv.started, f"start of {row.user}/{row.resource_id}") if srv.started else None
                if started is None or started - row.start <= RESTART_TOLERANCE:
                    continue
                latest = min(started, now)  # an earlier run of a restarted server
            known = stopped.get(row.user, {}).get(row.resource_id)
            end = latest if known is None else as_utc(known, f"stop time of {row.user}/{row.resource_id}")
            end = max(row.start, min(end, latest))
            closed.append(record(close_in(row, end, "closed by reconcile: server not running")))
        open_now = {(r.user, r.resource_id) for r in s.scalars(select(Span).where(Span.kind == kind, Span.end.is_(None)))}
        for (user, name), srv in sorted(running.items()):
            if (user, name) not in open_now:
                opened.append(record(_open_missing(s, user, name, srv, now, kind)))
    return ReconcileResult(closed=closed, opened=opened)
