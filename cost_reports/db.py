"""The ledger database: engine, sessions and the per-user write lock.

``CostDB("sqlite:///.state/costs.sqlite")`` or
``CostDB("postgresql+psycopg://user@host/db")``. Write transactions that must
not interleave for one user (reservations, reconcile) go through
:meth:`CostDB.write` with ``lock_user``:

* PostgreSQL: a row per user in ``cost_user_locks`` is created if missing and
  locked with ``SELECT ... FOR UPDATE`` until the transaction ends.
* SQLite: every write transaction starts with ``BEGIN IMMEDIATE``, which takes
  the database's write lock at once (other writers wait, up to ``busy_timeout``).
  Reads use a plain deferred ``BEGIN``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .clock import Clock, SystemClock
from .models import Base, UserLock, sqlite_money_problems

_WRITE = "posehub_write"
CONNECT_TIMEOUT_S = 5


def make_engine(url: str, *, busy_timeout_s: float = 30.0) -> Engine:
    """An engine for ``url``; on SQLite set up for ``BEGIN IMMEDIATE`` writes, WAL and a busy timeout."""
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ValueError("the cost ledger needs a file: use sqlite:///path/to/costs.sqlite")
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            write = conn.get_execution_options().get(_WRITE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    if url.startswith("postgresql"):  # a server that does not answer fails a connection in seconds, not never
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    raise ValueError(f"unsupported ledger database {url.split(':', 1)[0]!r} (expected sqlite:/// or postgresql+psycopg://)")


class CostDB:
    """The ledger database plus the clock every store reads "now" from."""

    def __init__(self, url_or_engine: str | Engine, clock: Clock | None = None):
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.clock: Clock = clock or SystemClock()
        self._write_engine = self.engine.execution_options(**{_WRITE: True})

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def create_all(self) -> None:
        """Create the ledger's tables if missing (no migrations yet: tables are only added).

        On SQLite, a ledger whose money columns are not integers (an older
        layout, which kept decimal text) is refused with a RuntimeError.
        """
        from . import notices  # noqa: F401  (registers its table)

        Base.metadata.create_all(self.engine)
        # indexes added since a ledger's tables were made (create_all adds only missing tables)
        for table in Base.metadata.sorted_tables:
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)
        if self.dialect == "sqlite":
            with self.engine.connect() as conn:
                problems = sqlite_money_problems(conn)
            if problems:
                raise RuntimeError(f"the ledger {self.engine.url.database} keeps money as text in "
                                   f"{', '.join(problems)}; this version needs integer millionths: "
                                   "move the file aside to start a new ledger")

    def drop_all(self) -> None:
        Base.metadata.drop_all(self.engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; rolled back at the end."""
        with Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def write(self, lock_user: str | None = None) -> Iterator[Session]:
        """A write transaction, committed at the end, rolled back on an exception.

        With ``lock_user`` the transaction holds that user's lock from the start,
        so check-then-write sequences for one user never interleave.
        """
        with Session(self._write_engine, expire_on_commit=False) as session:
            with session.begin():
                if lock_user is not None:
                    self.lock(session, lock_user)
                yield session

    def lock(self, session: Session, user: str) -> None:
        """Take ``user``'s lock inside a :meth:`write` transaction (several users: in sorted order)."""
        if self.dialect == "postgresql":
            session.execute(pg_insert(UserLock).values(user=user).on_conflict_do_nothing())
            session.execute(select(UserLock).where(UserLock.user == user).with_for_update())
        # SQLite: BEGIN IMMEDIATE already holds the database's write lock.

    def dispose(self) -> None:
        self.engine.dispose()
