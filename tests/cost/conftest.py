"""Fixtures of the cost ledger tests: a fake clock and a fresh ledger database on SQLite and on PostgreSQL.

The PostgreSQL server (tests/pgserver.py) is started once per test session and
stopped at its end; every test gets a database of its own on it. Without
PostgreSQL's binaries the PostgreSQL half of the tests fails (it is not skipped).
"""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from cost_reports.clock import UTC, FakeClock
from cost_reports.db import CostDB
from pgserver import PgServer

START = datetime(2026, 11, 1, tzinfo=UTC)
BACKENDS = ("sqlite", "postgresql")
_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session (fast shutdown at the end)."""
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    """A clock standing still at 2026-11-01T00:00Z until the test moves it."""
    return FakeClock(START)


@pytest.fixture
def db_url(request, tmp_path):
    """Builds the URL of a fresh, empty ledger database on ``backend`` ("sqlite" or "postgresql")."""
    made = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'costs-{next(_db_numbers)}.sqlite'}"
        if backend == "postgresql":
            server = request.getfixturevalue("pg_server")
            name = f"costs_{next(_db_numbers)}"
            made.append((server, name))
            return server.create_database(name)
        raise ValueError(f"unknown backend {backend!r}")

    yield make
    for server, name in made:
        server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def cost_db(backend, db_url, clock):
    """A fresh CostDB with its tables, on both backends, reading "now" from ``clock``."""
    db = CostDB(db_url(backend), clock)
    db.create_all()
    yield db
    db.dispose()
