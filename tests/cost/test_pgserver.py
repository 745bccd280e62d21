"""The PostgreSQL test server itself (tests/pgserver.py)."""

from __future__ import annotations

import os
import re

import psycopg
import pytest

from pgserver import PgServerError, find_binary


def test_server_is_up_on_loopback(pg_server):
    assert re.fullmatch(rf"postgresql\+psycopg://{pg_server.db_user}@127\.0\.0\.1:\d+/postgres", pg_server.url())
    with psycopg.connect(pg_server.dsn()) as conn:
        user, addr = conn.execute("SELECT current_user, inet_server_addr()::text").fetchone()
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    assert (user, addr) == (pg_server.db_user, "127.0.0.1/32")
    assert data_dir == str(pg_server.data_dir)
    if os.geteuid() == 0:  # postgres refuses root: it runs as an unprivileged user owning its folder
        assert pg_server.os_user != "root" and os.stat(pg_server.data_dir).st_uid != 0


def test_missing_binary_is_an_error(monkeypatch):
    monkeypatch.setenv("POSEHUB_PG_BIN", "/nonexistent")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PgServerError) as e:
        find_binary("initdb-missing")
    assert str(e.value) == (
        "PostgreSQL's initdb-missing not found (looked in $POSEHUB_PG_BIN, /usr/local/bin and PATH): "
        "install PostgreSQL server binaries (e.g. apt-get install postgresql) to run the PostgreSQL tests")
