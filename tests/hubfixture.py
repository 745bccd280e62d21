"""A real PoseHub on loopback for tests: `posehub up` with a config of the test's own.

The hub, the proxy and the single-user servers are the real programs; only the
ports (free ones) and the state folder (the test's tmp_path) differ from `make up`.
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
POSEHUB = REPO / ".venv" / "bin" / "posehub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=60.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - polling
            last = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


# system accounts of this test session's hubs ("pht<4 letters>-alice"), removed at its end (conftest.py); a prefix of
# its own, so two test runs on one machine never touch each other's accounts
TEST_ACCOUNT_PREFIX = "pht" + "".join(random.choice(string.ascii_lowercase) for _ in range(4)) + "-"


def data_dir() -> Path:
    """A data folder (homes, buckets, mounts) the test hub's user accounts can enter: pytest's own temporary
    folders are 0700, so it lives beside them in /tmp and is removed when the tests end."""
    path = Path(tempfile.mkdtemp(prefix="posehub-data-", dir="/tmp"))
    os.chmod(path, 0o711)
    atexit.register(shutil.rmtree, path, True)
    return path


def base_config(state_dir: Path) -> dict:
    return {
        "hub": {
            "ip": "127.0.0.1",
            "port": free_port(),
            "hub_port": free_port(),
            "proxy_api_port": free_port(),
            "state_dir": str(state_dir),
            "data_dir": str(data_dir()),
            "admin_contact": "help@lab.example",
        },
        "isolation": {"account_prefix": TEST_ACCOUNT_PREFIX},
        "admins": ["admin"],
        "groups": {"staff": {"users": ["sam"]}},
        "images": {"base": {"description": "base"}},
        "profiles": [
            {"slug": "cpu-small", "display_name": "Small CPU", "image": "base", "cpu": 1, "memory": "1G",
             "price_per_hour": 0.1},
            {"slug": "cpu-staff", "display_name": "Staff CPU", "image": "base", "cpu": 2, "memory": "2G",
             "price_per_hour": 0.4, "allowed_groups": ["staff"]},
        ],
        "auth": {"local": {"open_signup": False, "minimum_password_length": 8}},
        "buckets": {"backend": "local", "shared": [{"name": "openfield-demo", "read_only": True}],
                    "home": {"name": "posehub-home"}},
        "costs": {"port": free_port()},
        "watch": {"port": free_port()},
        # the idle culler is off in the hubs of most tests (tests/test_culling.py turns it on)
        "culling": {"enabled": False},
        # Dask Gateway is off in the hubs of most tests (tests/test_dask_gateway.py turns it on)
        "dask": {"enabled": False, "port": free_port(), "scheduler_port": free_port(), "api_port": free_port()},
    }


POSE_PYTHON = REPO / ".envs" / "pose" / "bin" / "python"


def pose_config(state_dir: Path) -> dict:
    """``base_config`` with the pose image and a CPU profile that uses it (``pose-cpu``); the pose environment
    must be built (`make test` builds it)."""
    import pytest

    if not POSE_PYTHON.exists():
        pytest.fail(f"the pose image's environment is not built ({POSE_PYTHON}): `make test` builds it")
    cfg = base_config(state_dir)
    cfg["images"]["pose"] = {"description": "SLEAP and DeepLabCut"}
    cfg["profiles"].append({"slug": "pose-cpu", "display_name": "Pose (CPU)", "image": "pose", "cpu": 2,
                            "memory": "8G", "price_per_hour": 0.2})
    return cfg


class Hub:
    def __init__(self, config: dict, workdir: Path):
        self.config = config
        self.workdir = workdir
        self.config_file = workdir / "posehub.yaml"
        self.config_file.write_text(yaml.safe_dump(config))
        tls = config["hub"].get("tls", {}).get("cert_file")
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{config['hub']['port']}"
        self.state_dir = Path(config["hub"]["state_dir"])
        self.data_dir = Path(config["hub"]["data_dir"])
        self.log_file = workdir / "hub.log"
        self.proc: subprocess.Popen | None = None
        self.first_output = ""

    # ------------------------------------------------------------ process

    def start(self, timeout=180):
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [str(POSEHUB), "up", "--config", str(self.config_file)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir,
        )
        try:
            wait_for(self._ready, timeout=timeout, what=f"hub at {self.url}")
        except TimeoutError:
            raise RuntimeError(f"hub did not start; log:\n{self.log()}") from None
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"hub exited with {self.proc.returncode}; log:\n{self.log()}")
        return requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200

    def stop(self, sig=signal.SIGINT, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def admin_password(self) -> str:
        return (self.state_dir / "admin-password").read_text().strip()

    def account(self, user: str) -> str:
        """The system account a hub user runs as."""
        from posehub.hub.accounts import system_name

        return system_name(user, self.config.get("isolation", {}).get("account_prefix", "posehub-"))

    def home(self, user: str) -> Path:
        return self.data_dir / "homes" / self.account(user)

    def bucket(self, name: str) -> Path:
        """A local bucket's folder."""
        return self.data_dir / "buckets" / name

    # ------------------------------------------------------------ HTTP as a person

    def session(self, username: str | None = None, password: str | None = None) -> requests.Session:
        s = requests.Session()
        if username:
            self.login(s, username, password)
        return s

    def _xsrf(self, s: requests.Session, path: str) -> str:
        r = s.get(f"{self.url}{path}", timeout=10)
        r.raise_for_status()
        m = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
        return m.group(1) if m else s.cookies.get("_xsrf", "")

    def login(self, s: requests.Session, username: str, password: str) -> requests.Response:
        xsrf = self._xsrf(s, "/hub/login")
        r = s.post(f"{self.url}/hub/login", data={"username": username, "password": password, "_xsrf": xsrf},
                   timeout=30, allow_redirects=True)
        if "jupyterhub-session-id" not in s.cookies and not any(c.name.startswith("jupyterhub-hub-login") for c in s.cookies):
            raise AssertionError(f"login as {username} failed: {r.status_code} {r.url}")
        return r

    def signup(self, username: str, password: str) -> requests.Response:
        s = requests.Session()
        xsrf = self._xsrf(s, "/hub/signup")
        return s.post(f"{self.url}/hub/signup",
                      data={"username": username, "signup_password": password,
                            "signup_password_confirmation": password, "_xsrf": xsrf}, timeout=30)

    def admin_session(self) -> requests.Session:
        if not hasattr(self, "_admin"):
            self._admin = self.session("admin", self.admin_password)
        return self._admin

    def create_user(self, username: str, password: str) -> None:
        """Sign up through the real form, then approve as the admin."""
        self.signup(username, password)
        r = self.admin_session().get(f"{self.url}/hub/authorize/{username}", timeout=10)
        r.raise_for_status()

    # ------------------------------------------------------------ REST API as the admin

    def api_token(self) -> str:
        if not hasattr(self, "_token"):
            s = self.admin_session()
            xsrf = s.cookies.get("_xsrf", "")
            r = s.post(f"{self.url}/hub/api/users/admin/tokens", json={"note": "tests", "expires_in": 3600},
                       headers={"X-XSRFToken": xsrf, "Referer": f"{self.url}/hub/token"}, timeout=10)
            r.raise_for_status()
            self._token = r.json()["token"]
        return self._token

    def api(self, method: str, path: str, **kw) -> requests.Response:
        headers = {"Authorization": f"token {self.api_token()}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw)


# ---------------------------------------------------------------- helpers on top of Hub


def spawn_form_xsrf(hub: Hub, s: requests.Session, path: str = "/hub/spawn") -> tuple[str, str]:
    """GET the spawn page; returns (html, xsrf token from the form's action URL)."""
    import html as htmllib

    r = s.get(f"{hub.url}{path}", timeout=30)
    r.raise_for_status()
    r.encoding = "utf-8"  # the page declares it in <meta charset>, not in the header
    m = re.search(r'action="([^"]+)"', r.text)
    action = htmllib.unescape(m.group(1)) if m else ""
    x = re.search(r"_xsrf=([^&]+)", action)
    return r.text, (x.group(1) if x else s.cookies.get("_xsrf", ""))


def offered_profiles(page_html: str) -> list[str]:
    return re.findall(r'data-profile="([^"]+)"', page_html)


def spawn_with_form(hub: Hub, s: requests.Session, profile: str) -> requests.Response:
    _, xsrf = spawn_form_xsrf(hub, s)
    r = s.post(f"{hub.url}/hub/spawn", data={"profile": profile, "_xsrf": xsrf}, timeout=60)
    r.encoding = "utf-8"
    return r


def wait_ready(hub: Hub, user: str, timeout=120):
    def ready():
        server = hub.api("GET", f"/users/{user}").json()["servers"].get("")
        return server and server["ready"]

    wait_for(ready, timeout=timeout, what=f"{user}'s server to be ready")


def server_processes(hub: Hub, user: str) -> list[int]:
    """PIDs of this hub's running single-user servers of a user (found through /proc)."""
    home = f"HOME={hub.home(user)}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if b"jupyterhub-singleuser" in cmd and f"JUPYTERHUB_USER={user}".encode() in env and home in env:
            pids.append(int(d.name))
    return pids


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
