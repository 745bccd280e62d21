#!/usr/bin/env python3
"""Login-to-ready benchmark: PoseHub against plain JupyterHub on the same machine.

N users log in through the real login form and start their servers at the same
moment (one thread each, released together by a barrier). A user's time runs
from the start of the login to the moment the hub reports the server ready AND
the user's own session gets the JupyterLab page (/user/<name>/lab, through the
OAuth hand-off) with status 200. Users are created before the clock starts.

  PoseHub: the real `posehub up` (tests/hubfixture.py), profile `cpu-small`
           picked in the spawn form, with isolation on (as run by root): each
           user's first spawn makes their system account (`phbench-<name>`,
           removed after the run) and the server runs as it, in its own
           control group with the profile's limits.
  plain:   JupyterHub with SimpleLocalProcessSpawner, NativeAuthenticator (open
           sign-up), the same proxy and single-user environment; no options
           form, so GET /hub/spawn starts the server.

Prints p50/p95/max per system and the ratio PoseHub/plain; target ratio <= 1.10.
Exit status: 0 when every server came up and the target is met, 1 otherwise.

    .venv/bin/python bench/spawn.py [--users 20] [--rounds 1] [--timeout 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from hubfixture import Hub, base_config, free_port, spawn_with_form, wait_for  # noqa: E402

TARGET = 1.10
PASSWORD = "bench-Quartz-7319"  # long enough and not a common password
ADMIN_PASSWORD = "bench-Admin-5521"


class PlainHub(Hub):
    """Plain JupyterHub, driven through the same helpers as a PoseHub `Hub`."""

    def __init__(self, workdir: Path):
        self.workdir, self.state_dir = workdir, workdir
        port, self.hub_port, self.proxy_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = workdir / "hub.log"
        self.proc = None
        self.config_file = workdir / "jupyterhub_config.py"
        root = "c.Spawner.args = ['--ServerApp.allow_root=True']\n" if os.geteuid() == 0 else ""
        self.config_file.write_text(f"""\
c.JupyterHub.bind_url = "{self.url}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.JupyterHub.db_url = "sqlite:///{workdir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = "{workdir / 'jupyterhub_cookie_secret'}"
c.ConfigurableHTTPProxy.command = ["{REPO / 'node_modules' / '.bin' / 'configurable-http-proxy'}"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_port}"
c.ConfigurableHTTPProxy.pid_file = "{workdir / 'proxy.pid'}"
c.JupyterHub.authenticator_class = "nativeauthenticator.NativeAuthenticator"
c.NativeAuthenticator.open_signup = True
c.NativeAuthenticator.minimum_password_length = 8
c.NativeAuthenticator.check_common_password = True
c.Authenticator.admin_users = {{"admin"}}
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = ["{REPO / '.envs' / 'base' / 'bin' / 'jupyterhub-singleuser'}"]
c.SimpleLocalProcessSpawner.home_dir_template = "{workdir / 'homes' / '{username}'}"
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 300
{root}""")

    def start(self, timeout=90):
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "jupyterhub"), "-f", str(self.config_file)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir)
        wait_for(self._ready, timeout=timeout, what=f"plain hub at {self.url}")
        self.signup("admin", ADMIN_PASSWORD).raise_for_status()  # admin_users are approved at sign-up
        return self

    @property
    def admin_password(self) -> str:
        return ADMIN_PASSWORD

    def create_user(self, username: str, password: str) -> None:
        self.signup(username, password).raise_for_status()  # open sign-up: no approval


def spawn_posehub(hub, s, name):
    r = spawn_with_form(hub, s, "cpu-small")
    if r.status_code >= 400:
        raise RuntimeError(f"spawn form answered {r.status_code}")


def spawn_plain(hub, s, name):
    # Login already lands on /hub/spawn, which (no options form) starts the server;
    # this GET starts it if not, and is a bare redirect (not followed) otherwise.
    s.get(f"{hub.url}/hub/spawn", timeout=120, allow_redirects=False).raise_for_status()


def kill_leftovers(hub_port: int, proxy_port: int):
    """Single-user servers of this hub and its proxy, should the hub not have stopped them."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if (b"jupyterhub-singleuser" in cmd and f"JUPYTERHUB_API_URL=http://127.0.0.1:{hub_port}/".encode() in env) \
                or (b"configurable-http-proxy" in cmd and f"--api-port {proxy_port} ".encode() in cmd + b" "):
            try:
                os.kill(int(d.name), signal.SIGKILL)
            except OSError:
                pass


BENCH_PREFIX = "phbench-"


def remove_accounts(prefix: str) -> None:
    """The system accounts this run's PoseHub made (PoseHub itself never deletes accounts)."""
    import pwd

    for pw in pwd.getpwall():
        if pw.pw_name.startswith(prefix) and pw.pw_gecos.startswith("PoseHub user "):
            subprocess.run(["pkill", "-KILL", "-u", pw.pw_name], capture_output=True)
            subprocess.run(["userdel", pw.pw_name], capture_output=True)


def run_system(label: str, users: int, timeout: float) -> tuple[list[float], dict[str, str]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
    if label == "posehub":
        cfg = base_config(workdir / "state")
        cfg["isolation"]["account_prefix"] = BENCH_PREFIX
        hub, spawn, ports = Hub(cfg, workdir), spawn_posehub, (cfg["hub"]["hub_port"], cfg["hub"]["proxy_api_port"])
    else:
        hub, spawn = PlainHub(workdir), spawn_plain
        ports = (hub.hub_port, hub.proxy_port)
    names = [f"{label}{i:02d}" for i in range(users)]
    times: list[float] = []
    errors: dict[str, str] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(users)
    try:
        t = time.monotonic()
        hub.start()
        print(f"{label}: hub up in {time.monotonic() - t:.1f}s ({workdir})", flush=True)
        for line in hub.log().splitlines():
            if line.startswith("isolation: "):
                print(f"{label}: {line}", flush=True)
        for name in names:
            hub.create_user(name, PASSWORD)
        hub.api_token()
        print(f"{label}: {users} users created; starting servers", flush=True)

        def one(name):
            barrier.wait()
            t0 = time.monotonic()
            left = lambda: max(1.0, t0 + timeout - time.monotonic())  # noqa: E731
            try:
                s = hub.session(name, PASSWORD)
                spawn(hub, s, name)
                wait_for(lambda: (hub.api("GET", f"/users/{name}").json()["servers"].get("") or {}).get("ready"),
                         timeout=left(), interval=0.5, what=f"{name} ready")
                lab = f"{hub.url}/user/{name}/lab"
                wait_for(lambda: (r := s.get(lab, timeout=60)).status_code == 200 and r.url.split("?")[0] == lab,
                         timeout=left(), interval=0.5, what=f"{name} lab page")
                dt = time.monotonic() - t0
                with lock:
                    times.append(dt)
                    print(f"{label}: {len(times)}/{users} ready ({name} {dt:.1f}s)", flush=True)
            except Exception as e:  # noqa: BLE001 - recorded as a failure
                with lock:
                    errors[name] = repr(e)[:300]
                    print(f"{label}: {name} FAILED after {time.monotonic() - t0:.1f}s: {errors[name]}", flush=True)

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in names]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        print(f"{label}: stopping the hub", flush=True)
        hub.stop(timeout=180)
        kill_leftovers(*ports)
        if label == "posehub":
            remove_accounts(BENCH_PREFIX)
    if errors:
        print(f"{label}: hub log tail:\n{hub.log()[-3000:]}", flush=True)
    return times, errors


def pct(xs: list[float], q: float) -> float:
    """Percentile with linear interpolation between closest ranks (like numpy's default)."""
    if not xs:
        return math.nan
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=20, help="concurrent users (default 20)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; the order of the systems alternates")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per user, login to ready (default 300)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    times = {"posehub": [], "plain": []}
    failures = {"posehub": {}, "plain": {}}
    for rnd in range(args.rounds):
        order = ["posehub", "plain"] if rnd % 2 == 0 else ["plain", "posehub"]
        for label in order:
            print(f"== round {rnd + 1}/{args.rounds}: {label}, {args.users} users", flush=True)
            t, e = run_system(label, args.users, args.timeout)
            times[label] += t
            failures[label].update({f"r{rnd + 1}:{k}": v for k, v in e.items()})

    stats = {}
    print(f"\nlogin-to-ready seconds, {os.cpu_count()} CPUs, {args.rounds} round(s)")
    print(f"{'system':<10}{'N':>5}{'ok':>5}{'p50':>9}{'p95':>9}{'max':>9}")
    for label in ("posehub", "plain"):
        xs = times[label]
        stats[label] = {"n": args.users * args.rounds, "ok": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95),
                        "max": max(xs, default=math.nan), "times": sorted(xs), "failures": failures[label]}
        s = stats[label]
        print(f"{label:<10}{s['n']:>5}{s['ok']:>5}{s['p50']:>9.2f}{s['p95']:>9.2f}{s['max']:>9.2f}")
    r50 = stats["posehub"]["p50"] / stats["plain"]["p50"]
    r95 = stats["posehub"]["p95"] / stats["plain"]["p95"]
    all_ok = not failures["posehub"] and not failures["plain"]
    met = all_ok and r50 <= TARGET and r95 <= TARGET
    print(f"ratio p50 (PoseHub/plain): {r50:.3f}")
    print(f"ratio p95 (PoseHub/plain): {r95:.3f}")
    print(f"target ratio <= {TARGET:.2f}: {'MET' if met else 'NOT MET'}"
          + ("" if all_ok else " (some servers did not come up)"))
    if args.json:
        Path(args.json).write_text(json.dumps({"users": args.users, "rounds": args.rounds, "cpus": os.cpu_count(),
                                               "target": TARGET, "ratio_p50": r50, "ratio_p95": r95,
                                               "target_met": met, **stats}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
