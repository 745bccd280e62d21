"""A throw-away PostgreSQL server for tests: initdb in a temporary folder, loopback only, trust auth.

    with PgServer() as pg:
        engine = create_engine(pg.url())           # postgresql+psycopg://USER@127.0.0.1:PORT/postgres
        pg.create_database("test_1")

PostgreSQL refuses to run as root. Run as root, the server runs as an
unprivileged system user (``$POSEHUB_PG_USER``, else "posehubpg", created with
``useradd --system`` when missing) through ``runuser -u USER --``, with its
folder chowned to that user; run as anyone else, it runs directly. The
binaries are looked up in ``$POSEHUB_PG_BIN``, /usr/local/bin, then PATH; when
``initdb`` cannot be found :class:`PgServerError` says so (tests fail, they do
not skip).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_OS_USER = "posehubpg"


class PgServerError(RuntimeError):
    """The server could not be set up, started or reached."""


def find_binary(name: str) -> str:
    """Path of a PostgreSQL program: ``$POSEHUB_PG_BIN/name``, /usr/local/bin/name, then PATH."""
    for folder in filter(None, [os.environ.get("POSEHUB_PG_BIN"), "/usr/local/bin"]):
        cand = Path(folder) / name
        if cand.exists() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which(name)
    if found is None:
        raise PgServerError(
            f"PostgreSQL's {name} not found (looked in $POSEHUB_PG_BIN, /usr/local/bin and PATH): "
            "install PostgreSQL server binaries (e.g. apt-get install postgresql) to run the PostgreSQL tests"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_os_user(name: str) -> pwd.struct_passwd:
    """The system user ``name``, created (no login, no home) if it does not exist yet."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       capture_output=True, text=True)
    if r.returncode not in (0, 9):  # 9: created meanwhile by someone else
        raise PgServerError(f"cannot create system user {name!r} for PostgreSQL: {r.stderr.strip()}")
    return pwd.getpwnam(name)


class PgServer:
    """One PostgreSQL server in its own temporary folder; :meth:`start`, :meth:`stop` (or ``with``)."""

    def __init__(self, os_user: str | None = None, start_timeout: float = 60.0):
        self.start_timeout = start_timeout
        self.as_root = os.geteuid() == 0
        if self.as_root:
            self.os_user = os_user or os.environ.get("POSEHUB_PG_USER") or DEFAULT_OS_USER
        else:
            self.os_user = pwd.getpwuid(os.geteuid()).pw_name
        self.db_user = self.os_user
        self.port: int | None = None
        self.root: Path | None = None

    # ------------------------------------------------------------ helpers

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.os_user, "--", *args] if self.as_root else list(args)

    def _run(self, *args: str, what: str, timeout: float = 120) -> None:
        r = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise PgServerError(f"{what} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}\n"
                                f"{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3, TCP on 127.0.0.1, trust auth)."""
        return f"postgresql+psycopg://{self.db_user}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.db_user} dbname={database}"

    # ------------------------------------------------------------ life cycle

    def start(self) -> "PgServer":
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if self.as_root:
            ensure_os_user(self.os_user)
        self.root = Path(tempfile.mkdtemp(prefix="posehub-pg-"))
        self.socket_dir.mkdir()
        if self.as_root:
            pw = pwd.getpwnam(self.os_user)
            for p in (self.root, self.socket_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._run(initdb, "-D", str(self.data_dir), "-U", self.db_user, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", what="initdb")
        last = None
        for _ in range(5):  # another process may take the free port before postgres binds it
            self.port = free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.socket_dir} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            r = subprocess.run(self._cmd(pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_file), "-o", opts,
                                         "-w", "-t", str(int(self.start_timeout)), "start"),
                               capture_output=True, text=True, timeout=self.start_timeout + 30)
            if r.returncode == 0 and self._accepts():
                return self
            last = f"pg_ctl start failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}\n{self.log_tail()}"
            if "already in use" not in self.log_tail():
                break
        self._cleanup()
        raise PgServerError(last or "PostgreSQL did not start")

    def _accepts(self) -> bool:
        import psycopg

        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (dropped first if it exists); returns its URL."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, closing its sessions."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(self._cmd(find_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"),
                           capture_output=True, text=True, timeout=120)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "PgServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
