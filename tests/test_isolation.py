"""Users kept apart on one machine, tried from the inside: code typed in bob's real Jupyter kernel.

One hub (isolation.mode: accounts, cgroup limits) runs alice and bob (cpu-small) and carol ("tiny": half a
core, 600M). Every test runs code in bob's kernel (tests/kernel.py) against alice, the hub and the machine,
and checks that it is refused, and that the legitimate owner (alice, carol or the hub as root) can do the
same thing, so that a refusal for some unrelated reason cannot pass for isolation.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from hubfixture import REPO, TEST_ACCOUNT_PREFIX, Hub, base_config, process_env, server_processes, spawn_with_form, wait_for, wait_ready
from kernel import Kernel

pytestmark = pytest.mark.slow
PASSWORD = "correct-horse-9"

if os.geteuid() != 0:
    pytest.skip("isolation needs the hub to run as root", allow_module_level=True)


# ---------------------------------------------------------------- the hub, its users and their kernels


def hub_folder() -> Path:
    """The hub's folder, enterable by everyone (not pytest's 0700 tmp), so that only the state folder's own
    mode keeps the accounts out of it; the log is the test's own file, kept private."""
    work = Path(tempfile.mkdtemp(prefix="posehub-iso-", dir="/tmp"))
    os.chmod(work, 0o755)
    (work / "hub.log").touch(mode=0o600)
    return work


@pytest.fixture(scope="module")
def iso(request):
    work = hub_folder()
    cfg = base_config(work / "state")
    cfg["profiles"] += [
        {"slug": "tiny", "display_name": "Tiny", "image": "base", "cpu": 0.5, "memory": "600M", "price_per_hour": 0.1},
        {"slug": "huge", "display_name": "Huge", "image": "base", "cpu": 1, "memory": "4096G", "price_per_hour": 0.1},
    ]
    hub = Hub(cfg, work)
    kernels: dict[str, Kernel] = {}
    try:
        hub.start()
        for name in ("alice", "bob", "carol"):
            hub.create_user(name, PASSWORD)
        for name, profile in (("alice", "cpu-small"), ("bob", "cpu-small"), ("carol", "tiny")):
            r = spawn_with_form(hub, hub.session(name, PASSWORD), profile)
            assert r.status_code == 200, r.text[-2000:]
        for name in ("alice", "bob", "carol"):
            wait_ready(hub, name, timeout=180)
            kernels[name] = Kernel.start(hub, name)
            wait_for(lambda k=kernels[name]: k.execute("1").status == "ok", timeout=60, what=f"{name}'s kernel")
        bob = kernels["bob"]
        assert bob.execute(PROBE).status == "ok"
        yield {"hub": hub, "kernels": kernels, "work": work}
    finally:
        for k in kernels.values():
            k.shutdown()
        hub.stop()
        failed = [item for item in request.session.items if item.module is request.module
                  and getattr(getattr(item, "rep_call", None), "failed", False)]
        if failed or not hub.proc or hub.proc.returncode not in (0, None, -2, 130):
            print(f"\n----- hub log ({hub.log_file}) -----\n{hub.log()[-20000:]}")
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(iso) -> Hub:
    return iso["hub"]


@pytest.fixture(scope="module")
def bob(iso) -> Kernel:
    return iso["kernels"]["bob"]


@pytest.fixture(scope="module")
def alice(iso) -> Kernel:
    return iso["kernels"]["alice"]


# in every kernel the tests use: attempt(stmt) runs one statement and says how it went
PROBE = r'''
import json as _json
def _attempt(stmt):
    try:
        exec(stmt, {})
        out = {"ok": True}
    except BaseException as e:
        out = {"ok": False, "type": type(e).__name__, "errno": getattr(e, "errno", None), "msg": str(e)}
    print("@@" + _json.dumps(out))
'''


def attempt(kernel: Kernel, stmt: str) -> dict:
    """Run ``stmt`` in the kernel: {"ok": True} or {"ok": False, "type": "PermissionError", "errno": 13, ...}."""
    r = kernel.execute(f"_attempt({stmt!r})")
    if r.error and r.error[0] == "NameError":  # a restarted kernel, or one that has not seen PROBE yet
        kernel.execute(PROBE)
        r = kernel.execute(f"_attempt({stmt!r})")
    assert r.status == "ok", (r, stmt)
    line = [x for x in r.stdout.splitlines() if x.startswith("@@")][-1]
    return json.loads(line[2:])


def value(kernel: Kernel, expr: str, timeout=60):
    """The JSON value of ``expr`` evaluated in the kernel."""
    r = kernel.execute(f"import json as _j; print('@@' + _j.dumps({expr}))", timeout=timeout)
    assert r.status == "ok" and not r.error, (r, expr)
    return json.loads([x for x in r.stdout.splitlines() if x.startswith("@@")][-1][2:])


def refused(result: dict, *errnos) -> bool:
    return not result["ok"] and result["type"] == "PermissionError" and result["errno"] in (errnos or (errno.EACCES,))


def uid_of(hub: Hub, user: str) -> int:
    return pwd.getpwnam(hub.account(user)).pw_uid


def cgroup_dir(pid: int, controller: str) -> Path:
    """The folder of ``controller``'s group of a process (cgroup v1)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(","):
            return Path(f"/sys/fs/cgroup/{ctrls}{path}")
    raise AssertionError(f"no {controller} group for {pid}: {Path(f'/proc/{pid}/cgroup').read_text()}")


def server_pid(hub: Hub, user: str) -> int:
    [pid] = server_processes(hub, user)
    return pid


# ---------------------------------------------------------------- who runs where


def test_each_user_runs_as_their_own_account(hub, bob, alice):
    for user, kernel in (("bob", bob), ("alice", alice)):
        pw = pwd.getpwnam(hub.account(user))
        got = value(kernel, "[__import__('os').getuid(), __import__('os').geteuid(), __import__('os').getgid(), "
                            "__import__('os').environ['HOME'], __import__('os').getcwd(), "
                            "__import__('pwd').getpwuid(__import__('os').getuid()).pw_name]")
        assert got == [pw.pw_uid, pw.pw_uid, pw.pw_gid, str(hub.home(user)), str(hub.home(user)), hub.account(user)]
    assert uid_of(hub, "alice") != uid_of(hub, "bob") and 0 not in (uid_of(hub, "alice"), uid_of(hub, "bob"))


def test_homes_are_private(hub, bob, alice):
    for user in ("alice", "bob"):
        st = hub.home(user).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid_of(hub, user), 0o700), user
    home = hub.home("alice")
    manifest = home / ".posehub" / "storage.json"
    assert manifest.is_file()
    for stmt in (f"__import__('os').listdir({str(home)!r})",
                 f"open({str(manifest)!r}).read()",
                 f"open({str(home / 'from-bob.txt')!r}, 'w').write('x')",
                 f"open({str(home / '.bashrc')!r}, 'a').write('x')"):
        assert refused(attempt(bob, stmt)), stmt
    assert not (home / "from-bob.txt").exists()
    # nor find out who else has a home or a home prefix
    for folder in (hub.data_dir, hub.data_dir / "homes", hub.bucket("posehub-home")):
        assert refused(attempt(bob, f"__import__('os').listdir({str(folder)!r})")), folder
    # alice herself can
    assert attempt(alice, f"__import__('os').listdir({str(home)!r})")["ok"]
    assert value(alice, f"__import__('json').load(open({str(manifest)!r}))['user']") == "alice"
    assert attempt(alice, f"open({str(home / 'from-alice.txt')!r}, 'w').write('x')")["ok"]
    assert (home / "from-alice.txt").stat().st_uid == uid_of(hub, "alice")
    # and bob his own
    assert value(bob, f"__import__('json').load(open({str(hub.home('bob') / '.posehub/storage.json')!r}))['user']") \
        == "bob"


def test_state_folder_is_the_hubs_alone(hub, bob):
    state = hub.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700 and state.stat().st_uid == 0
    names = sorted(p.name for p in state.iterdir())
    for must in ("admin-password", "jupyterhub_cookie_secret", "jupyterhub.sqlite", "costs.sqlite"):
        assert must in names, names
    assert refused(attempt(bob, f"__import__('os').listdir({str(state)!r})"))
    assert refused(attempt(bob, f"open({str(state / 'planted')!r}, 'w')"))
    for name in names:
        path = state / name
        if path.is_file():
            assert refused(attempt(bob, f"open({str(path)!r}, 'rb').read()")), name
            assert refused(attempt(bob, f"open({str(path)!r}, 'ab')")), name
    for db in ("jupyterhub.sqlite", "costs.sqlite"):
        r = attempt(bob, f"__import__('sqlite3').connect({str(state / db)!r}).execute('select * from sqlite_master')"
                         ".fetchall()")
        assert not r["ok"] and r["type"] == "OperationalError" and "unable to open" in r["msg"], (db, r)
        r = attempt(bob, f"__import__('sqlite3').connect('file:{state / db}?mode=ro', uri=True)"
                         ".execute('select * from sqlite_master').fetchall()")
        assert not r["ok"], (db, r)
    # the hub itself (root) reads them: the refusals above are the folder's doing
    assert hub.admin_password and (state / "jupyterhub.sqlite").read_bytes()[:15] == b"SQLite format 3"
    # nothing of the hub's readable beside the state folder either (the admin password, the cookie secret)
    for path in hub.workdir.iterdir():
        if path.is_file() and path.name != "hub.log":
            r = attempt(bob, f"open({str(path)!r}).read()")
            if r["ok"]:
                text = path.read_text(errors="replace")
                assert hub.admin_password not in text, path


def test_code_and_environments_are_read_only(bob):
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    assert site.is_relative_to(REPO / ".venv"), site
    base_lib = next((REPO / ".envs" / "base" / "lib").glob("python3*")) / "site-packages"
    targets = [site, REPO / "extensions" / "posehub", REPO / "extensions" / "posehub" / "hub", base_lib,
               REPO / ".envs" / "base" / "lib", REPO / ".envs" / "base" / "bin", REPO / "hub_config"]
    for folder in targets:
        assert folder.is_dir(), folder
        assert refused(attempt(bob, f"open({str(folder / 'planted-by-bob.py')!r}, 'w')")), folder
        assert not (folder / "planted-by-bob.py").exists()
    for f in (REPO / "extensions" / "posehub" / "hub" / "spawner.py", base_lib / "jupyterhub" / "__init__.py"):
        assert refused(attempt(bob, f"open({str(f)!r}, 'a')")), f
        assert attempt(bob, f"open({str(f)!r}).read()")["ok"], f  # readable: bob runs this code


def _hub_and_proxy_pids(hub: Hub) -> dict[str, int]:
    port = str(hub.config["hub"]["proxy_api_port"])
    found = {"hub": hub.proc.pid}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"configurable-http-proxy" in c for c in cmd) and port.encode() in b" ".join(cmd):
                found["proxy"] = int(d.name)
    assert "proxy" in found, "the proxy's process was not found"
    return found


def test_other_processes_environments_are_unreadable(hub, bob, alice):
    alice_pid = server_pid(hub, "alice")
    token = process_env(alice_pid)["JUPYTERHUB_API_TOKEN"]  # read as root
    assert len(token) > 16
    pids = {"alice's server": alice_pid, **_hub_and_proxy_pids(hub)}
    assert "CONFIGPROXY_AUTH_TOKEN" in process_env(pids["proxy"])
    for what, pid in pids.items():
        assert refused(attempt(bob, f"open('/proc/{pid}/environ', 'rb').read()")), what
        assert not attempt(bob, f"open('/proc/{pid}/mem', 'rb').read(1)")["ok"], what
        assert refused(attempt(bob, f"__import__('os').kill({pid}, 15)"), errno.EPERM), what
    # no secret of the hub, the proxy, the cost service or alice anywhere bob can read in /proc (any process's
    # environment or command line), nor in his own environment
    secrets = {"alice's server token": token, "admin password": hub.admin_password,
               "cookie secret": (hub.state_dir / "jupyterhub_cookie_secret").read_text().strip()}
    for pid in _hub_processes(hub):
        if Path(f"/proc/{pid}").stat().st_uid != uid_of(hub, "bob"):  # bob's own secrets are his
            for key, val in process_env(pid).items():
                if re.search(r"TOKEN|SECRET|PASSWORD|KEY", key) and len(val) >= 16:
                    secrets[f"{key} of {pid} {Path(f'/proc/{pid}/cmdline').read_bytes()[:80]!r}"] = val
    assert any("CONFIGPROXY_AUTH_TOKEN" in k for k in secrets), secrets.keys()
    leaks = _leaks(bob, secrets)
    assert leaks == {}, leaks
    # alice reads her own server's environment and finds her token there
    assert value(alice, f"{token!r} in open('/proc/{alice_pid}/environ').read()") is True


def _hub_processes(hub: Hub) -> list[int]:
    """The hub, the proxy, the cost service and the servers: processes of this hub run as root or users."""
    marks = (str(hub.config_file).encode(), str(hub.state_dir).encode(), str(hub.data_dir).encode())
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = (d / "environ").read_bytes()
            except OSError:
                continue
            if any(m in env for m in marks):
                out.append(int(d.name))
    return out


def _leaks(kernel: Kernel, secrets: dict[str, str]) -> dict[str, list[str]]:
    """Where the kernel finds each secret: /proc/<pid>/environ or cmdline it can read, or its own os.environ."""
    code = f"""
import os, pathlib, json
_found = {{}}
for _what, _s in {secrets!r}.items():
    _b = _s.encode()
    for d in pathlib.Path('/proc').iterdir():
        if d.name.isdigit():
            for f in ('environ', 'cmdline'):
                try:
                    if _b in (d / f).read_bytes():
                        _found.setdefault(_what, []).append(str(d / f))
                except OSError:
                    pass
    if any(_s in v for v in os.environ.values()):
        _found.setdefault(_what, []).append('os.environ')
print('@@' + json.dumps(_found))
"""
    r = kernel.execute(code, timeout=120)
    assert r.status == "ok" and not r.error, r
    return json.loads([x for x in r.stdout.splitlines() if x.startswith("@@")][-1][2:])


def test_bobs_own_token_opens_only_his_server(hub, bob):
    """The token bob's kernel has (his server's JUPYTERHUB_API_TOKEN) opens his server, not alice's, and not
    alice's server's own port behind the proxy either; the proxy's API wants its own token."""
    alice_url = process_env(server_pid(hub, "alice"))["JUPYTERHUB_SERVICE_URL"]  # read as root: .../user/alice/
    assert alice_url.endswith("/user/alice/") and not alice_url.startswith(hub.url)
    code = f"""
import os, json, urllib.request, urllib.error
def _get(url):
    req = urllib.request.Request(url, headers={{"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
print("@@" + json.dumps({{u: _get(u) for u in [
    "{hub.url}/user/bob/api/contents", "{hub.url}/user/alice/api/contents", "{hub.url}/user/alice/api/kernels",
    "{alice_url}api/contents", "{hub.url}/hub/api/users", "{hub.url}/hub/api/users/alice",
    "{hub.url}/hub/api/users/bob", "http://127.0.0.1:{hub.config['hub']['proxy_api_port']}/api/routes"]}}))
"""
    r = bob.execute(code)
    assert r.status == "ok" and not r.error, r
    got = json.loads([x for x in r.stdout.splitlines() if x.startswith("@@")][-1][2:])
    assert got.pop(f"{hub.url}/user/bob/api/contents") == 200
    assert got.pop(f"{hub.url}/hub/api/users/bob") == 200
    assert got.pop(f"{alice_url}api/contents") == 403, got  # alice's server's own port, past the proxy
    assert all(code in (403, 404) for code in got.values()), got


def test_control_groups_cannot_be_left_or_loosened(hub, bob):
    pid = server_pid(hub, "bob")
    memory, pids = cgroup_dir(pid, "memory"), cgroup_dir(pid, "pids")
    assert int((pids / "pids.max").read_text()) == 1024  # isolation.max_processes (default)
    for target in (memory.parent / "cgroup.procs", memory.parent.parent / "cgroup.procs",
                   Path("/sys/fs/cgroup/memory/cgroup.procs"), memory / "memory.limit_in_bytes",
                   memory / "memory.memsw.limit_in_bytes", pids / "pids.max",
                   cgroup_dir(pid, "devices") / "devices.allow", cgroup_dir(pid, "cpu") / "cpu.cfs_quota_us",
                   cgroup_dir(pid, "freezer") / "freezer.state"):
        r = attempt(bob, f"open({str(target)!r}, 'w').write(str(__import__('os').getpid()))")
        assert not r["ok"] and r["errno"] in (errno.EACCES, errno.EPERM), (target, r)
    assert value(bob, "open('/proc/self/cgroup').read()") == Path(f"/proc/{pid}/cgroup").read_text()


def test_process_count_is_limited(hub, bob):
    code = """
import threading, json
_ev, _ts, _err = threading.Event(), [], None
try:
    for _ in range(1500):
        _t = threading.Thread(target=_ev.wait)
        _t.start()
        _ts.append(_t)
except RuntimeError as e:
    _err = str(e)
_ev.set()
for _t in _ts:
    _t.join()
print('@@' + json.dumps([len(_ts), _err]))
"""
    r = bob.execute(code, timeout=120)
    assert r.status == "ok" and not r.error, r
    started, err = json.loads([x for x in r.stdout.splitlines() if x.startswith("@@")][-1][2:])
    assert 500 < started < 1024 and "can't start new thread" in err, (started, err)
    assert value(bob, "6 * 7") == 42  # the kernel is fine afterwards


# ---------------------------------------------------------------- buckets


def test_home_bucket_prefixes_and_read_only_bucket(hub, bob, alice):
    prefix = hub.bucket("posehub-home") / "alice"
    st = prefix.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid_of(hub, "alice"), 0o700)
    assert refused(attempt(bob, f"__import__('os').listdir({str(prefix)!r})"))
    assert refused(attempt(bob, f"open({str(prefix / 'from-bob.txt')!r}, 'w')"))
    assert attempt(alice, f"open({str(hub.home('alice') / 'home-bucket' / 'from-alice.txt')!r}, 'w').write('x')")["ok"]
    assert (prefix / "from-alice.txt").is_file()
    assert attempt(bob, f"open({str(hub.home('bob') / 'home-bucket' / 'from-bob.txt')!r}, 'w').write('x')")["ok"]
    assert (hub.bucket("posehub-home") / "bob" / "from-bob.txt").stat().st_uid == uid_of(hub, "bob")

    shared = hub.bucket("openfield-demo")
    (shared / "readme.txt").write_text("demo\n")
    os.chmod(shared / "readme.txt", 0o644)
    via_home = hub.home("bob") / "buckets" / "openfield-demo"
    for folder in (shared, via_home):
        assert value(bob, f"open({str(folder / 'readme.txt')!r}).read()") == "demo\n"  # readable ...
        assert refused(attempt(bob, f"open({str(folder / 'from-bob.txt')!r}, 'w')")), folder  # ... not writable
        assert refused(attempt(bob, f"__import__('os').remove({str(folder / 'readme.txt')!r})")), folder
    assert sorted(p.name for p in shared.iterdir()) == ["readme.txt"]


# ---------------------------------------------------------------- devices


@pytest.fixture(scope="module")
def gpu_nodes():
    folder = Path(tempfile.mkdtemp(prefix="posehub-dev-", dir="/tmp"))
    os.chmod(folder, 0o755)
    nodes = []
    for name, minor in (("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)):
        path = folder / name
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(195, minor))
        os.chmod(path, 0o666)
        nodes.append(path)
    yield nodes  # /dev/nvidia0, /dev/nvidia1, /dev/nvidiactl
    shutil.rmtree(folder, ignore_errors=True)


def _open_errno(path) -> int:
    try:
        os.close(os.open(path, os.O_RDWR))
        return 0
    except OSError as e:
        return e.errno


def test_servers_without_gpus_cannot_open_gpu_devices(bob, gpu_nodes):
    # outside any server's group the node reaches the (absent) driver: ENXIO, not EPERM
    assert _open_errno(gpu_nodes[0]) in (errno.ENXIO, errno.ENODEV)
    for node in gpu_nodes:
        r = attempt(bob, f"__import__('os').open({str(node)!r}, __import__('os').O_RDWR)")
        assert refused(r, errno.EPERM) and "Operation not permitted" in r["msg"], (node, r)
    assert attempt(bob, "open('/dev/null', 'w').write('x')")["ok"]
    assert attempt(bob, "open('/dev/urandom', 'rb').read(8)")["ok"]


# ---------------------------------------------------------------- limits (carol's "tiny": 0.5 CPU, 600M)


def test_memory_limit_kills_the_kernel_not_the_server(hub, iso):
    pid = server_pid(hub, "carol")
    memory = cgroup_dir(pid, "memory")
    assert int((memory / "memory.limit_in_bytes").read_text()) == 600 * 2**20
    kernel = iso["kernels"]["carol"]
    assert kernel.execute("x = 1").status == "ok"
    r = kernel.execute("b = bytearray(1500 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')",
                       timeout=120)
    assert r.status == "died" and "survived" not in r.stdout, r
    oom = (memory / "memory.oom_control").read_text()
    kills = int(next((line.split()[1] for line in oom.splitlines() if line.startswith("oom_kill ")), "0"))
    assert kills >= 1 or int((memory / "memory.failcnt").read_text()) > 0, oom
    # carol's server lives on, and so does her kernel (restarted by the server)
    assert server_processes(hub, "carol") == [pid]
    status = requests.get(f"{hub.url}/user/carol/api/status", headers=kernel.headers, timeout=30)
    assert status.status_code == 200, status.text
    assert hub.api("GET", "/users/carol").json()["servers"][""]["ready"]
    wait_for(lambda: kernel.execute("print(6 * 7)").stdout.strip() == "42", timeout=60, what="the restarted kernel")


def test_cpu_quota_holds_two_busy_processes_to_half_a_core(hub, iso):
    kernel = Kernel.start(hub, "carol", iso["kernels"]["carol"].token)
    cpuacct = cgroup_dir(server_pid(hub, "carol"), "cpuacct")
    assert int((cgroup_dir(server_pid(hub, "carol"), "cpu") / "cpu.cfs_quota_us").read_text()) == 50_000
    try:
        code = """
import multiprocessing, os, time
def _busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
t0, c0 = time.monotonic(), os.times()
ps = [multiprocessing.Process(target=_busy, args=(4,)) for _ in range(2)]
for p in ps: p.start()
for p in ps: p.join()
c1, wall = os.times(), time.monotonic() - t0
cpu = sum(c1[:4]) - sum(c0[:4])
print('@@', cpu, wall)
"""
        before, t0 = int((cpuacct / "cpuacct.usage").read_text()), time.monotonic()
        r = kernel.execute(code, timeout=60)
        group_cpu, wall = (int((cpuacct / "cpuacct.usage").read_text()) - before) / 1e9, time.monotonic() - t0
        assert r.status == "ok" and not r.error, r
        cpu, kernel_wall = map(float, [x for x in r.stdout.splitlines() if x.startswith("@@")][-1].split()[1:])
        assert kernel_wall >= 4
        assert 0.1 < cpu / kernel_wall <= 0.5 * 1.3, (cpu, kernel_wall)
        assert group_cpu / wall <= 0.5 * 1.3, (group_cpu, wall)
    finally:
        kernel.shutdown()


# ---------------------------------------------------------------- refusals before anything starts


def _passwd_of(hub_name: str) -> list[str]:
    return [pw.pw_name for pw in pwd.getpwall() if pw.pw_gecos == f"PoseHub user {hub_name}"]


def _server_groups(hub: Hub) -> list[str]:
    parent = cgroup_dir(server_pid(hub, "alice"), "memory").parent
    return sorted(p.name for p in parent.iterdir() if p.is_dir())


def test_a_name_outside_the_rule_is_refused_and_nothing_is_made(hub):
    """A name no account could be made from (no letter or digit) is refused by the hub's user-name rule itself."""
    groups = _server_groups(hub)
    for name in ("*", "***", "a..b"):
        r = hub.api("POST", f"/users/{requests.utils.quote(name, safe='')}")
        assert r.status_code == 400, r.text
        assert _passwd_of(name) == []
    assert _server_groups(hub) == groups


def test_a_name_whose_account_is_taken_is_refused_and_nothing_is_made(hub):
    """The system account a hub name maps to exists but PoseHub did not make it (a local account of the machine):
    the spawn is refused with the sentence, no process, control group or budget hold is left, and the account
    is untouched."""
    from posehub.hub.accounts import system_name

    account = system_name("mallory", TEST_ACCOUNT_PREFIX)
    subprocess.run(["useradd", "--no-create-home", "--comment", "someone's own account", account], check=True)
    try:
        groups = _server_groups(hub)
        assert hub.api("POST", "/users/mallory").status_code == 201
        r = hub.api("POST", "/users/mallory/server", json={"profile": "cpu-small"})
        assert r.status_code == 400, r.text
        assert f"'{account}'" in r.json()["message"] and "PoseHub" in r.json()["message"], r.json()
        assert pwd.getpwnam(account).pw_gecos == "someone's own account"
        assert _server_groups(hub) == groups
        assert hub.api("GET", "/users/mallory").json()["servers"] == {}
        assert server_processes(hub, "mallory") == []
    finally:
        subprocess.run(["userdel", account], check=False)


def test_profile_larger_than_the_machine_is_refused(hub):
    groups = _server_groups(hub)
    assert hub.api("POST", "/users/dave").status_code in (201, 409)
    r = hub.api("POST", "/users/dave/server", json={"profile": "huge"})
    assert r.status_code in (400, 409), r.text
    assert "this machine has" in r.json()["message"], r.json()
    assert _passwd_of("dave") == []
    assert _server_groups(hub) == groups
    assert hub.api("GET", "/users/dave").json()["servers"] == {}
    assert server_processes(hub, "dave") == []


# ---------------------------------------------------------------- stopping (last: bob's server goes away)


def _sleepers(uid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid == uid and (d / "cmdline").read_bytes() == b"sleep\x001000\x00":
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_detached_processes_die_with_the_server(hub, bob):
    uid = uid_of(hub, "bob")
    assert _sleepers(uid) == []
    code = """
import os, subprocess
r, w = os.pipe()
child = os.fork()
if child == 0:  # double fork: the sleeper's parent exits, so it is reparented and in its own session
    try:
        os.close(r)
        p = subprocess.Popen(["setsid", "sleep", "1000"], start_new_session=True)
        os.write(w, str(p.pid).encode())
    finally:
        os._exit(0)
os.close(w)
os.waitpid(child, 0)
print('@@', os.read(r, 64).decode())
"""
    r = bob.execute(code)
    assert r.status == "ok" and not r.error, r
    pid = int([x for x in r.stdout.splitlines() if x.startswith("@@")][-1].split()[1])
    sleepers = wait_for(lambda: _sleepers(uid), timeout=10, what="bob's detached sleep")
    assert pid in sleepers or len(sleepers) == 1, (pid, sleepers)
    [sleeper] = sleepers
    assert os.getsid(sleeper) == sleeper  # its own session, parent gone
    server = server_pid(hub, "bob")
    groups = {c: cgroup_dir(server, c) for c in ("memory", "cpu", "cpuacct", "pids", "devices", "freezer")}
    assert all(str(sleeper) in (g / "cgroup.procs").read_text().split() for g in groups.values()), groups
    assert hub.api("DELETE", "/users/bob/server").status_code in (202, 204)
    wait_for(lambda: not hub.api("GET", "/users/bob").json()["servers"], timeout=60, what="bob's server to stop")
    assert server_processes(hub, "bob") == []
    wait_for(lambda: not Path(f"/proc/{sleeper}").exists(), timeout=30, what=f"bob's detached sleep {sleeper} to end")
    wait_for(lambda: not any(g.exists() for g in groups.values()), timeout=30, what="bob's control group to go")


def test_gpu_servers_open_only_their_own_gpu(gpu_nodes):
    """A hub declaring GPUs 0 and 1: each GPU server's group allows its CUDA_VISIBLE_DEVICES index (the open
    reaches the absent driver: ENXIO) and the control device, and refuses the other GPU (EPERM)."""
    work = hub_folder()
    cfg = base_config(work / "state")
    cfg["gpus"] = {"devices": [0, 1]}
    cfg["profiles"].append({"slug": "gpu", "display_name": "One GPU", "image": "base", "gpus": 1, "cpu": 1,
                            "memory": "1G", "price_per_hour": 1.2})
    hub = Hub(cfg, work)
    ok = False
    try:
        hub.start()
        seen = set()
        for name in ("alice", "bob"):
            hub.create_user(name, PASSWORD)
            assert spawn_with_form(hub, hub.session(name, PASSWORD), "gpu").status_code == 200
        for name in ("alice", "bob"):
            wait_ready(hub, name, timeout=180)
            kernel = Kernel.start(hub, name)
            try:
                wait_for(lambda: kernel.execute("1").status == "ok", timeout=60, what=f"{name}'s kernel")
                mine = int(value(kernel, "__import__('os').environ['CUDA_VISIBLE_DEVICES']"))
                seen.add(mine)
                errnos = _kernel_open_errnos(kernel, gpu_nodes)
                expect = ["ENXIO" if i == mine else "EPERM" for i in (0, 1)] + ["ENXIO"]
                assert errnos == expect, (name, mine, errnos)
            finally:
                kernel.shutdown()
        assert seen == {0, 1}
        ok = True
    finally:
        hub.stop()
        if not ok:
            print(f"\n----- hub log ({hub.log_file}) -----\n{hub.log()[-20000:]}")
        shutil.rmtree(work, ignore_errors=True)


def _kernel_open_errnos(kernel: Kernel, paths) -> list[str]:
    code = f"""
import os, errno, json
_out = []
for p in {[str(p) for p in paths]!r}:
    try:
        os.close(os.open(p, os.O_RDWR))
        _out.append("ok")
    except OSError as e:
        _out.append(errno.errorcode.get(e.errno, str(e.errno)))
print("@@" + json.dumps(_out))
"""
    r = kernel.execute(code)
    assert r.status == "ok" and not r.error, r
    return json.loads([x for x in r.stdout.splitlines() if x.startswith("@@")][-1][2:])
