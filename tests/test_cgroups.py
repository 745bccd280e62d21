"""Control groups (posehub.hub.cgroups, posehub.hub.limits): real groups holding real processes.

The tests that make groups need root and a writable cgroup filesystem and are skipped otherwise; they
put everything under ``<this process's own group>/posehub-test-<pid>`` and remove it again. The pure
parts (limit arithmetic, the systemd command line) run everywhere.
"""

import ctypes
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posehub.hub import cgroups
from posehub.hub.cgroups import CgroupError
from posehub.hub.limits import Limits, cpu_quota_us, device_allow_rules, memory_fits

MiB = 1 << 20
GiB = 1 << 30


# ---------------------------------------------------------------- pure


def test_cpu_quota():
    assert cpu_quota_us(0.5) == 50_000
    assert cpu_quota_us(2) == 200_000
    assert cpu_quota_us(0.001) == 1000  # the kernel's minimum
    with pytest.raises(ValueError):
        cpu_quota_us(0)


def test_device_rules():
    base = device_allow_rules(())
    assert "c 1:3 rwm" in base and "c 136:* rwm" in base
    assert not [r for r in base if r.startswith("c 195:")]
    assert device_allow_rules((), extra_majors=[511]) == base  # no GPU: no NVIDIA helper either
    rules = device_allow_rules((2, 0), extra_majors=[511])
    assert rules[len(base):] == ["c 195:0 rwm", "c 195:2 rwm", "c 195:255 rwm", "c 195:254 rwm", "c 511:* rwm"]


def test_memory_fits():
    assert memory_fits(8 * GiB, 16 * GiB) == ""
    assert memory_fits(16 * GiB, 16 * GiB) == ""
    assert memory_fits(32 * GiB, int(23.4 * GiB)) == (
        "The profile asks for 32 GiB of memory; this machine has 23.4 GiB. "
        "Lower the profile's `memory` in posehub.yaml.")


def test_systemd_command_line():
    box = cgroups.SystemdSandbox("server-alice", "posehub-server-alice.scope",
                                 Limits(memory_bytes=2 * GiB, cpus=1.5, tasks=500, gpus=(1,)))
    assert box.drops_privileges
    assert box.wrap(["jupyterhub-singleuser", "--port=9000"], 1001, 1002) == [
        "systemd-run", "--scope", "--quiet", "--collect", "--unit", "posehub-server-alice.scope",
        "-p", f"MemoryMax={2 * GiB}", "-p", "MemorySwapMax=0", "-p", "CPUQuota=150%", "-p", "TasksMax=500",
        "-p", "DevicePolicy=closed", "-p", "DeviceAllow=char-pts rw", "-p", "DeviceAllow=/dev/nvidia1 rw",
        "-p", "DeviceAllow=/dev/nvidiactl rw", "-p", "DeviceAllow=/dev/nvidia-modeset rw",
        "-p", "DeviceAllow=char-nvidia-uvm rw",
        "--uid", "1001", "--gid", "1002", "--", "jupyterhub-singleuser", "--port=9000"]
    no_gpu = cgroups.SystemdSandbox("w", "posehub-w.scope", Limits(gpus=())).properties()
    assert no_gpu == ["DevicePolicy=closed", "DeviceAllow=char-pts rw"]
    assert cgroups.SystemdSandbox("w", "posehub-w.scope", Limits()).properties() == []


def test_systemd_restore_takes_only_its_own_units():
    backend = cgroups.SystemdBackend("posehub")
    box = backend.restore({"backend": "systemd", "name": "server-bob", "unit": "posehub-server-bob.scope"})
    assert (box.name, box.unit) == ("server-bob", "posehub-server-bob.scope")
    with pytest.raises(CgroupError):
        backend.restore({"backend": "systemd", "name": "server-bob", "unit": "sshd.service"})
    with pytest.raises(CgroupError):
        backend.restore({"backend": "cgroupfs-v1", "name": "server-bob", "dirs": {}})


# ---------------------------------------------------------------- real groups


@pytest.fixture(scope="module")
def backend():
    if os.geteuid() != 0:
        pytest.skip("making control groups needs root")
    try:
        b = cgroups.detect(parent=f"posehub-test-{os.getpid()}", prefer="cgroupfs")
    except CgroupError as e:
        pytest.skip(f"no writable cgroup filesystem: {e}")
    if b.name != "cgroupfs-v1":
        os.rmdir(b.parent)
        pytest.skip(f"these tests drive cgroup v1 files; this machine has {b.name}")
    yield b
    for path in {os.path.realpath(p) for p in b.parents.values()}:  # the v1 backend's folders
        if os.path.isdir(path):
            os.rmdir(path)


@pytest.fixture
def make(backend):
    """make(limits, name=None): a new group, removed (with everything in it) after the test."""
    made = []

    def make(limits=Limits(), name=None):
        box = backend.create(name or f"t{len(made)}", limits)
        made.append(box)
        return box

    yield make
    for box in made:
        box.remove()


@pytest.fixture
def spawn(make):
    """spawn(box, code, *args, **popen): ``python -c code args`` started inside ``box``."""
    procs = []

    def spawn(box, code, *args, **kw):
        p = subprocess.Popen([sys.executable, "-c", code, *args], preexec_fn=box.preexec, **kw)
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


SLEEP = "import time; time.sleep(600)"


def test_detect_reports_v1(backend):
    assert backend.name == "cgroupfs-v1"
    assert backend.describe().startswith("limits: cgroup v1 filesystem (memory, cpu, cpuacct, pids, devices, freezer)")
    assert backend.devices_enforced


def test_detect_says_what_is_missing(backend, tmp_path):
    with pytest.raises(CgroupError, match="No cgroup filesystem is mounted"):
        cgroups.detect(root=str(tmp_path / "none"), prefer="cgroupfs")
    (tmp_path / "memory").mkdir()
    with pytest.raises(CgroupError, match="cpu, cpuacct, pids, devices, freezer are not mounted"):
        cgroups.detect(root=str(tmp_path), prefer="cgroupfs")
    with pytest.raises(CgroupError, match="Unknown control-group backend"):
        cgroups.detect(prefer="docker")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a b", "ü", "x\n"])
def test_bad_names_are_refused(backend, name):
    with pytest.raises(CgroupError, match="cannot name a control group"):
        backend.create(name, Limits())


def test_memory_limit_kills_the_biggest_process_only(make, spawn):
    box = make(Limits(memory_bytes=200 * MiB))
    sleeper = spawn(box, SLEEP)
    hog = spawn(box, "chunks = [b'x' * (10 << 20) for _ in range(40)]\nprint('survived 400 MiB')",
                stdout=subprocess.PIPE)
    out, _ = hog.communicate(timeout=120)
    assert hog.returncode == -signal.SIGKILL, out
    assert sleeper.poll() is None
    assert box.stats()["oom_kills"] >= 1
    assert box.stats()["memory_bytes"] < 200 * MiB


def test_cpu_quota_holds_a_busy_loop_to_half_a_core(make, spawn):
    box = make(Limits(cpus=0.5))
    start = time.monotonic()
    busy = spawn(box, "import time\nend = time.monotonic() + 3\nwhile time.monotonic() < end: pass")
    assert busy.wait(timeout=60) == 0
    wall = time.monotonic() - start
    cpu = box.stats()["cpu_seconds"]
    assert 0.05 < cpu / wall <= 0.5 * 1.3, (cpu, wall)


def test_task_limit_refuses_forks(make, spawn):
    box = make(Limits(tasks=20))
    code = """
import os, signal, time
kids = []
try:
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        kids.append(pid)
    print("forked", len(kids), 0)
except BlockingIOError as e:
    print("refused", len(kids), e.errno)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""
    out, _ = spawn(box, code, stdout=subprocess.PIPE, text=True).communicate(timeout=60)
    verdict, forked, err = out.split()
    assert (verdict, int(err)) == ("refused", errno.EAGAIN)
    assert int(forked) < 20


OPEN = """
import json, sys
result = {}
for path in sys.argv[1:]:
    try:
        open(path, "rb").close()
        result[path] = 0
    except OSError as e:
        result[path] = e.errno
print(json.dumps(result))
"""


@pytest.fixture
def fake_gpus(tmp_path):
    """/dev/nvidia0 and /dev/nvidia1 look-alikes (character devices 195:0, 195:1) in a temporary folder."""
    nodes = []
    for minor in (0, 1):
        node = tmp_path / f"nvidia{minor}"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(195, minor))
        nodes.append(str(node))
    try:
        open(nodes[0], "rb").close()
    except PermissionError:
        pytest.skip(f"{tmp_path} is mounted nodev: device files cannot be opened there at all")
    except OSError:
        pass  # no NVIDIA driver: ENXIO, as expected
    return nodes


def _opens(spawn, box, *paths):
    out, _ = spawn(box, OPEN, *paths, stdout=subprocess.PIPE, text=True).communicate(timeout=60)
    return json.loads(out)


def test_only_the_given_gpu_can_be_opened(make, spawn, fake_gpus):
    gpu0, gpu1 = fake_gpus
    result = _opens(spawn, make(Limits(gpus=(0,))), gpu0, gpu1, "/dev/null")
    assert result[gpu1] == errno.EPERM  # the devices controller says no
    assert result[gpu0] != errno.EPERM  # allowed: the kernel gets as far as looking for the driver (ENXIO)
    assert result["/dev/null"] == 0


def test_no_gpu_denies_every_nvidia_device(make, spawn, fake_gpus):
    gpu0, gpu1 = fake_gpus
    result = _opens(spawn, make(Limits(gpus=())), gpu0, gpu1, "/dev/null", "/dev/urandom")
    assert result == {gpu0: errno.EPERM, gpu1: errno.EPERM, "/dev/null": 0, "/dev/urandom": 0}


def test_devices_left_alone_without_gpus_setting(make, spawn, fake_gpus):
    gpu0, _ = fake_gpus
    assert _opens(spawn, make(Limits()), gpu0)[gpu0] != errno.EPERM


PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper():
    """Orphans come to this process (not to PID 1, which may never reap them), so a killed one can be
    reaped and seen to be gone entirely."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


DETACH = """
import os
if os.fork() == 0:
    pid = os.fork()
    if pid == 0:  # the grandchild: its own session, no terminal, no parent left
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execvp("setsid", ["setsid", "sleep", "600"])
    print(pid, flush=True)
    os._exit(0)
os.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_all_reaches_detached_processes(make, spawn, subreaper):
    box = make(Limits(tasks=50))
    starter = spawn(box, DETACH, stdout=subprocess.PIPE, text=True)
    out, _ = starter.communicate(timeout=60)
    detached = int(out)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{detached}/cmdline").read_bytes() != b"sleep\x00600\x00" and time.monotonic() < deadline:
        time.sleep(0.05)  # setsid execs sleep
    assert os.getsid(detached) == detached != os.getsid(0)
    assert box.pids() == [detached]

    assert box.kill_all() == 1
    assert box.pids() == []
    os.waitpid(detached, 0)  # ours to reap, as subreaper
    assert not _alive(detached) and not os.path.exists(f"/proc/{detached}")
    assert box.kill_all() == 0

    box.remove()
    assert not [d for d in box.state()["dirs"].values() if os.path.exists(d)]
    box.remove()  # idempotent


def test_restore_finds_a_running_group(backend, make, spawn):
    box = make(Limits(memory_bytes=100 * MiB, cpus=1, tasks=10))
    sleeper = spawn(box, SLEEP)
    again = backend.restore(json.loads(json.dumps(box.state())))
    assert again.name == box.name
    assert sleeper.pid in again.pids()
    again.remove()
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert not [d for d in box.state()["dirs"].values() if os.path.exists(d)]


def test_restore_refuses_foreign_state(backend, make):
    box = make()
    with pytest.raises(CgroupError):
        backend.restore({**box.state(), "backend": "systemd"})
    with pytest.raises(CgroupError):
        backend.restore({**box.state(), "dirs": {c: "/tmp/" + box.name for c in box.state()["dirs"]}})


def test_create_replaces_a_group_of_the_same_name(make, spawn):
    old = make(Limits(), name="same")
    sleeper = spawn(old, SLEEP)
    new = make(Limits(tasks=5), name="same")
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert new.pids() == []
    assert Path(new.dirs["pids"], "pids.max").read_text().strip() == "5"


def test_memory_limit_can_be_lowered_and_raised(make):
    box = make(Limits(memory_bytes=300 * MiB))
    folder = box.dirs["memory"]
    swap = Path(folder, "memory.memsw.limit_in_bytes")
    for limit in (100 * MiB, 500 * MiB):
        cgroups.set_v1_memory(folder, limit)
        assert int(Path(folder, "memory.limit_in_bytes").read_text()) == limit
        if swap.exists():
            assert int(swap.read_text()) == limit


def test_the_parent_weighs_as_many_groups_as_it_holds(backend, make):
    """CPU is shared between the groups at the hub's level: the parent of N servers weighs N default groups, as N
    processes of a hub without control groups would."""
    shares = os.path.join(backend.parents["cpu"], "cpu.shares")
    make(Limits(cpus=1))
    before = int(Path(shares).read_text())
    make(Limits(cpus=1))
    make(Limits(cpus=1))
    assert int(Path(shares).read_text()) == before + 2 * cgroups.CPU_SHARES
