"""Where "now" comes from.

Every function of the cost reporter that needs the current time takes it from
a :class:`Clock` (``clock.now()``), never from ``datetime.now()`` directly, so
tests can run a whole month in a second with :class:`FakeClock`.

Times are always timezone-aware UTC; :func:`as_utc` is the one gate through
which outside times come in.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Protocol

UTC = timezone.utc


def as_utc(when: datetime, what: str = "time") -> datetime:
    """``when`` converted to UTC. A naive datetime is refused (ValueError): its zone is unknown."""
    if not isinstance(when, datetime):
        raise ValueError(f"{what} must be a datetime, got {when!r}")
    if when.tzinfo is None or when.tzinfo.utcoffset(when) is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {when.isoformat()}")
    return when.astimezone(UTC)


class Clock(Protocol):
    """Anything with ``now() -> datetime`` (aware, UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock: ``datetime.now(UTC)``."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock for tests: stands still until :meth:`set` or :meth:`advance` moves it.

    ``FakeClock(datetime(2026, 11, 1, tzinfo=UTC))``; ``clock.advance(hours=2)``.
    Thread-safe, so threads of a concurrency test may share it.
    """

    def __init__(self, start: datetime):
        self._now = as_utc(start, "FakeClock start")
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (forwards or backwards); returns it in UTC."""
        when = as_utc(when, "FakeClock.set")
        with self._lock:
            self._now = when
        return when

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**kwargs)``; returns the new now."""
        step = delta if delta is not None else timedelta(**kwargs)
        if step < timedelta(0):
            raise ValueError(f"FakeClock.advance: cannot go back ({step}); use set()")
        with self._lock:
            self._now += step
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"
