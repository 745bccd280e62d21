"""The hub's side of budget enforcement: the checks made at spawn time.

The hub process (its spawner and its page templates) and the cost service
share one ledger database (``costs.db_url``). :class:`CostGate` is what the
spawner asks before and after a server starts:

* :meth:`CostGate.precheck` -- may this user start this profile now? (shown on
  the spawn form, nothing written);
* :meth:`CostGate.reserve` -- set the profile's minimum block aside, atomically
  (two spawns at once cannot both pass a check only one fits in);
* :meth:`CostGate.started` -- open the server's span and settle the reservation;
* :meth:`CostGate.stopped` -- close the server's span.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from cost_reports.core import CostReporter, ledger_url
from cost_reports.enforce import user_status
from cost_reports.money import cents, to_amount
from cost_reports.reservations import BudgetExceeded, Remaining

from ..config import PoseHubConfig

SERVER = "server"


def money(amount: Decimal) -> str:
    """$1,234.50 -- how amounts are shown to people."""
    return f"${cents(Decimal(amount)):,.2f}"


@dataclass(frozen=True)
class Check:
    """The answer of a budget check for one profile: ``ok``, and a sentence for the user if not."""

    ok: bool
    needed: Decimal
    remaining: Remaining
    message: str = ""


def refusal_message(profile: dict, needed: Decimal, left: Remaining, block_hours: Decimal, contact: str) -> str:
    have = max(left.remaining, Decimal(0))
    return (
        f"Not enough budget to start '{profile['display_name']}': it needs {money(needed)} "
        f"for a first block of {block_hours.normalize():f} h at {money(Decimal(str(profile['price_per_hour'])))}/h, "
        f"and you have {money(have)} left of {money(left.budget.total)} for {left.period.label}. "
        f"Pick a cheaper profile, or ask {contact} for more budget."
    )


class CostGate:
    """Budget checks of one hub, on the ledger named by its config."""

    def __init__(self, cfg: PoseHubConfig, reporter: CostReporter | None = None):
        self.cfg = cfg
        self.reporter = rep = reporter or CostReporter(cfg)
        self.db, self.ledger, self.reservations, self.notices = rep.db, rep.ledger, rep.reservations, rep.notices
        self.block_hours = rep.block_hours

    def block_price(self, profile: dict) -> Decimal:
        """What the minimum block of ``profile`` costs."""
        return to_amount(profile["price_per_hour"], f"price of {profile['slug']}") * self.block_hours

    def remaining(self, user: str, groups) -> Remaining:
        return self.reservations.remaining(user, groups)

    def precheck(self, user: str, groups, profile: dict, left: Remaining | None = None) -> Check:
        """Whether ``profile``'s minimum block fits in what ``user`` has left (nothing written)."""
        left = left or self.remaining(user, groups)
        needed = self.block_price(profile)
        if left.remaining >= needed:
            return Check(True, needed, left)
        contact = self.cfg["hub"]["admin_contact"]
        return Check(False, needed, left, refusal_message(profile, needed, left, self.block_hours, contact))

    def reserve(self, user: str, groups, profile: dict, ttl: timedelta) -> str:
        """Set the minimum block aside; raises BudgetExceeded with the user's message in ``.message``."""
        needed = self.block_price(profile)
        try:
            return self.reservations.reserve(user, needed, ttl, groups)
        except BudgetExceeded as e:
            left = self.remaining(user, groups)
            e.message = refusal_message(profile, needed, left, self.block_hours, self.cfg["hub"]["admin_contact"])
            raise

    def release(self, reservation_id: str) -> None:
        self.reservations.release(reservation_id)

    def started(self, user: str, server_name: str, profile: dict, reservation_id: str | None,
                start: datetime | None = None) -> int:
        """Open the server's span (at the profile's current price) and settle the reservation."""
        span = self.ledger.open_span(user, SERVER, server_name, profile["price_per_hour"], profile=profile["slug"],
                                     start=start)
        if reservation_id:
            self.reservations.settle(reservation_id, span.id)
        return span.id

    def stopped(self, user: str, server_name: str, end: datetime | None = None, note: str | None = None) -> None:
        """Close the server's span (at ``end``, default now); nothing if none is open."""
        self.ledger.close_resource(user, SERVER, server_name, end=end, note=note)

    def status(self, user: str, groups) -> dict:
        """Budget, spend, percent used and the warning to show (see ``cost_reports.enforce.user_status``)."""
        return user_status(self.reporter, user, groups)


@lru_cache(maxsize=4)
def _gate(path: str, url: str) -> CostGate:
    from ..config import load

    return CostGate(load(path or None))


def gate_for(cfg: PoseHubConfig) -> CostGate:
    """One gate per config file and ledger, per process."""
    return _gate(str(cfg.path), ledger_url(cfg))


class LedgerSlow(Exception):
    """The ledger did not answer in time; ``str(err)`` is a sentence for the user."""


class OffLoop:
    """Ledger calls made for the hub's event loop: each runs in a thread of its own pool and is waited for at most
    ``wait`` seconds, so a ledger that hangs holds up no one's page. After a call has timed out, calls are not even
    tried for ``pause`` seconds (the page goes on without them) rather than each waiting in turn."""

    def __init__(self, workers: int = 4, wait: float = 0.5, pause: float = 30.0, clock=None):
        import concurrent.futures
        import threading
        import time

        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="posehub-ledger")
        self._busy = 0
        self._lock = threading.Lock()
        self.workers, self.wait, self.pause = workers, wait, pause
        self._clock = clock or time.monotonic
        self._slow_until = 0.0

    def _submit(self, fn, *args):
        with self._lock:  # a call stuck in every thread: the next would only queue behind them
            if self._clock() < self._slow_until or self._busy >= self.workers:
                raise LedgerSlow("The cost ledger is not answering just now; try again in a minute.")
            self._busy += 1
        future = self._pool.submit(fn, *args)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future) -> None:
        with self._lock:
            self._busy -= 1

    def call(self, fn, *args):
        """``fn(*args)`` from synchronous code on the event loop (template variables): at most ``wait`` seconds."""
        import concurrent.futures

        future = self._submit(fn, *args)
        try:
            return future.result(timeout=self.wait)
        except concurrent.futures.TimeoutError:
            self._slow_until = self._clock() + self.pause
            raise LedgerSlow("The cost ledger is not answering just now; try again in a minute.") from None

    async def acall(self, fn, *args, timeout: float = 15.0):
        """``await``-able: the event loop goes on meanwhile; ``timeout`` seconds at most."""
        import asyncio

        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._submit(fn, *args)), timeout)
        except asyncio.TimeoutError:
            self._slow_until = self._clock() + self.pause
            raise LedgerSlow("The cost ledger is not answering just now, so your budget cannot be checked; "
                             "try again in a minute.") from None


_off_loop = OffLoop()


def off_loop() -> OffLoop:
    """The hub process's one pool for ledger calls made on behalf of its event loop."""
    return _off_loop
