"""A cost ledger that never answers (a server that accepts connections and stays silent) holds up no one: the hub's
pages keep answering, and a page that needs the ledger says so instead of hanging."""

import socket
import threading
import time

import pytest

from hubfixture import free_port

pytestmark = pytest.mark.slow
PASSWORD = "correct-horse-9"


class SilentServer:
    """Accepts TCP connections on loopback and never sends a byte (a database that hangs)."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.conns: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # kept open, never answered

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.stop()


@pytest.fixture
def hub_config(hub_config, silent):
    hub_config["costs"]["db_url"] = f"postgresql+psycopg://posehub:x@127.0.0.1:{silent.port}/costs"
    return hub_config


def test_a_ledger_that_hangs_freezes_no_one(hub):
    hub.create_user("alice", PASSWORD)
    hub.create_user("bob", PASSWORD)
    alice, bob = hub.session("alice", PASSWORD), hub.session("bob", PASSWORD)
    answers: list = []

    def bob_spawn_page():  # needs the ledger: the budget on the form
        answers.append(bob.get(f"{hub.url}/hub/spawn", timeout=60))

    t = threading.Thread(target=bob_spawn_page)
    t.start()
    # meanwhile alice's pages answer (each request gets 10 s; a frozen hub would answer none)
    for path in ("/hub/home", "/hub/token", "/hub/home", "/hub/api/", "/hub/home"):
        r = alice.get(f"{hub.url}{path}", timeout=10)
        assert r.status_code == 200, (path, r.status_code)
    t.join(60)
    assert answers, "bob's spawn page never answered"
    page = answers[0]
    assert page.status_code == 503
    assert "The cost ledger is not answering just now" in page.text
    # starting a server through the API is refused with the same sentence; nothing runs
    r = hub.api("POST", "/users/alice/server", json={"profile": "cpu-small"})
    assert r.status_code == 503 and "cost ledger is not answering" in r.json()["message"], r.text
    time.sleep(1)
    assert hub.api("GET", "/users/alice").json()["servers"] == {}
