"""Control groups: one per server, Dask scheduler or Dask worker, holding it and everything it starts.

A :class:`Backend` makes :class:`Sandbox` es that hold a :class:`~posehub.hub.limits.Limits`: a memory
limit (over it the kernel's OOM killer kills the group's biggest process, so a runaway Jupyter kernel
dies and its server stays), a CPU quota, a process count and, where the kernel allows it, which GPU
device files may be opened. :meth:`Sandbox.kill_all` kills every process of a group, also those that
left their session or double-forked, so nothing outlives a server.

:func:`detect` picks the backend: systemd scopes (``systemd-run --scope``) where systemd runs the
machine, else the cgroup filesystem directly, v1 or v2, with every group in
``<the hub's own group>/<parent>``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .limits import Limits, cpu_quota_us, device_allow_rules

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids")
CPU_SHARES, CPU_WEIGHT = 1024, 100  # the default weight of one group (v1 cpu.shares, v2 cpu.weight)
V2_LEAF = "posehub-hub"  # cgroup v2: where the hub's own processes move so its group may have children
PREFER = ("auto", "systemd", "cgroupfs", "cgroupfs-v1", "cgroupfs-v2")
_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


class CgroupError(RuntimeError):
    """A control group could not be made or used; ``str(err)`` is a sentence saying what to do."""


class Sandbox:
    """One control group holding one server or one Dask worker/scheduler and everything it starts."""

    name: str
    drops_privileges = False  # True when wrap()'s launcher becomes the user itself (systemd-run --uid)

    def state(self) -> dict:
        """JSON-able; :meth:`Backend.restore` turns it back into this sandbox after a hub restart."""
        raise NotImplementedError

    def preexec(self) -> None:
        """Called in the child between fork and exec, while still root: move it into the group (nothing for
        systemd, where the command from :meth:`wrap` does it)."""

    def wrap(self, cmd: list[str], uid: int, gid: int) -> list[str]:
        """The command line that starts ``cmd`` in the group (unchanged for the cgroup filesystem)."""
        return list(cmd)

    def pids(self) -> list[int]:
        raise NotImplementedError

    def kill_all(self, timeout: float = 10.0) -> int:
        """SIGKILL every process of the group and wait until it is empty; returns how many were killed."""
        raise NotImplementedError

    def remove(self) -> None:
        """Kill everything in the group and delete it; fine when it is already gone."""
        raise NotImplementedError

    def stats(self) -> dict:
        """``{"memory_bytes": usage now, "oom_kills": processes killed for memory, "cpu_seconds": used}``"""
        raise NotImplementedError


class Backend:
    name: str
    devices_enforced = True  # False where GPU device files cannot be restricted (cgroup v2 without BPF)

    def create(self, name: str, limits: Limits) -> Sandbox:
        """A new, empty group ``name`` holding ``limits``; an old group of that name is killed first."""
        raise NotImplementedError

    def restore(self, state: dict) -> Sandbox:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the hub's log."""
        raise NotImplementedError

    def _check_state(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("backend") != self.name:
            kind = state.get("backend") if isinstance(state, dict) else None
            raise CgroupError(f"A control group recorded by the {kind or 'unknown'} backend cannot be restored by the "
                              f"{self.name} backend; stop the server from the hub and start it again.")
        check_name(state.get("name", ""))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise CgroupError(f"{name!r} cannot name a control group: use only letters, digits, '_', '.' and '-'.")
    return name


# ---------------------------------------------------------------- small file helpers


def _write(path, value) -> None:
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except OSError as e:
        raise CgroupError(f"Could not write {str(value)!r} to {path} ({e.strerror}). The hub needs root and a "
                          "read-write cgroup filesystem to set resource limits.") from None


def _read(path, default: str = "") -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return default


def _field(text: str, key: str) -> int:
    """``oom_kill 3`` -> 3 for ``key='oom_kill'`` in a flat-keyed cgroup file; 0 when absent."""
    m = re.search(rf"^{re.escape(key)} (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def _procs(path) -> list[int]:
    return sorted({int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()})


def _join(dirs) -> None:
    """Move the calling process into each group (safe between fork and exec: plain system calls)."""
    pid = str(os.getpid()).encode()
    for d in dirs:
        fd = os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


def _kill(pids) -> set[int]:
    killed = set()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        except ProcessLookupError:
            pass
    return killed


def _wait_empty(pids_of, timeout: float) -> list[int]:
    """Poll until ``pids_of()`` is empty or ``timeout`` passes; returns what is left."""
    deadline = time.monotonic() + timeout
    while (left := pids_of()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def _rmdir(path, timeout: float = 5.0) -> None:
    """Remove an empty group; the kernel may answer EBUSY while the last processes finish exiting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise CgroupError(f"Could not remove the control group {path} ({e.strerror}); "
                                  f"see `cat {path}/cgroup.procs` for what is still in it.") from None
            time.sleep(0.05)


def _survivors(name: str, pids: list[int], timeout: float) -> CgroupError:
    return CgroupError(f"Processes {pids} of control group {name} were still alive {timeout:.0f} s after SIGKILL "
                       "(stuck in the kernel, e.g. on a hung file system); look at them with `ps -o pid,stat,wchan` "
                       "and remove the group once they are gone.")


def char_major(driver: str, proc_devices: str = "/proc/devices") -> int | None:
    """The character major of ``driver`` in /proc/devices (nvidia-uvm's is chosen at load), or None."""
    chars = _read(proc_devices).split("Block devices:")[0]
    m = re.search(rf"^\s*(\d+) {re.escape(driver)}$", chars, re.M)
    return int(m.group(1)) if m else None


def own_paths(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's group per controller (``{"memory": "/process_api/…", ...}``; ``""``: the v2 group)."""
    out = {}
    for line in _read(proc_cgroup).splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            out[c] = path
    return out


def _under_own(mount: str, own: str) -> str:
    """This process's group folder in one mounted hierarchy; the mount itself where only our own subtree is
    mounted (a container without a cgroup namespace)."""
    mine = os.path.join(mount, own.lstrip("/"))
    return mine if os.path.isdir(mine) else mount


# ---------------------------------------------------------------- the cgroup filesystem


class FsSandbox(Sandbox):
    """A group as folders of the cgroup filesystem, entered by writing a pid into their cgroup.procs."""

    def folders(self) -> list[str]:
        raise NotImplementedError

    def preexec(self) -> None:
        _join(self.folders())

    def _kill_round(self) -> set[int]:
        raise NotImplementedError

    def kill_all(self, timeout: float = 10.0) -> int:
        """Kill with no process able to fork meanwhile, and repeat until the group is empty."""
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise _survivors(self.name, pids, timeout)
            killed |= self._kill_round()
            _wait_empty(self.pids, 1.0)
        return len(killed)

    def remove(self) -> None:
        self.kill_all()
        for d in self.folders():
            _rmdir(d)


class FsBackend(Backend):
    root: str

    def _sandbox(self, name: str) -> FsSandbox:
        raise NotImplementedError

    def _from_state(self, state: dict) -> FsSandbox:
        raise NotImplementedError

    def _weigh_parent(self) -> None:
        """The parent's CPU weight grows with its groups: the scheduler shares CPU between the groups at the hub's
        level, so twenty servers in one parent would otherwise weigh as much as the hub's one process."""

    def create(self, name: str, limits: Limits) -> Sandbox:
        box = self._sandbox(check_name(name))
        box.remove()
        try:
            for d in box.folders():
                os.makedirs(d)  # the parent too, should someone have removed it
            box.apply(limits)
            self._weigh_parent()
        except OSError as e:
            box.remove()
            raise CgroupError(f"Could not create the control group {box.folders()[0]} ({e.strerror}); the hub "
                              "needs root and a read-write cgroup filesystem to set resource limits.") from None
        except CgroupError:
            box.remove()
            raise
        return box

    def restore(self, state: dict) -> Sandbox:
        self._check_state(state)
        box = self._from_state(state)
        ours = [d for d in box.folders() if isinstance(d, str) and d.startswith(self.root + "/")
                and os.path.basename(d) == box.name]
        if not box.folders() or len(ours) != len(box.folders()):
            raise CgroupError(f"The recorded control group {box.name} has unexpected folders {box.folders()}; "
                              "stop the server from the hub and start it again.")
        return box


def _make_parent(path: str) -> str:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise CgroupError(f"Could not create the control group {path} ({e.strerror}); run the hub as root with the "
                          "cgroup filesystem mounted read-write (a container needs a writable /sys/fs/cgroup) so "
                          "that it can set resource limits.") from None
    return path


# ---------------------------------------------------------------- cgroup v1


class V1Sandbox(FsSandbox):
    """A group made of one folder per controller (``dirs``: controller -> folder)."""

    def __init__(self, name: str, dirs: dict[str, str]):
        self.name, self.dirs = name, dict(dirs)

    def folders(self) -> list[str]:
        # cpu and cpuacct are often mounted together: one folder reached by two names
        return list({os.path.realpath(d): d for d in self.dirs.values()}.values())

    def state(self) -> dict:
        return {"backend": "cgroupfs-v1", "name": self.name, "dirs": self.dirs}

    def pids(self) -> list[int]:
        return _procs(self.dirs["freezer"])

    def _freeze(self, frozen: bool) -> None:
        state = os.path.join(self.dirs["freezer"], "freezer.state")
        try:
            with open(state, "w") as f:
                f.write("FROZEN" if frozen else "THAWED")
        except OSError:
            return  # gone meanwhile
        deadline = time.monotonic() + 2.0  # a task in uninterruptible sleep may never freeze: kill anyway
        while frozen and _read(state).strip() == "FREEZING" and time.monotonic() < deadline:
            time.sleep(0.01)

    def _kill_round(self) -> set[int]:
        """Freeze (nothing can fork), SIGKILL everyone, thaw (the signals land)."""
        self._freeze(True)
        try:
            return _kill(self.pids())
        finally:
            self._freeze(False)

    def stats(self) -> dict:
        mem = self.dirs["memory"]
        oom = _read(os.path.join(mem, "memory.oom_control"))
        return {
            "memory_bytes": int(_read(os.path.join(mem, "memory.usage_in_bytes"), "0")),
            "oom_kills": (_field(oom, "oom_kill") if "oom_kill " in oom
                          else int(_read(os.path.join(mem, "memory.failcnt"), "0"))),
            "cpu_seconds": int(_read(os.path.join(self.dirs["cpuacct"], "cpuacct.usage"), "0")) / 1e9,
        }

    def apply(self, limits: Limits) -> None:
        """Write ``limits`` into the group's controller files."""
        mem, cpu, dev = self.dirs["memory"], self.dirs["cpu"], self.dirs["devices"]
        for d in self.folders():
            _write(os.path.join(d, "notify_on_release"), 0)
        if limits.memory_bytes is not None:
            set_v1_memory(mem, limits.memory_bytes)
        _write(os.path.join(mem, "memory.oom_control"), 0)  # OOM killer on: kill the biggest, don't pause the group
        _write(os.path.join(cpu, "cpu.cfs_period_us"), 100_000)
        _write(os.path.join(cpu, "cpu.cfs_quota_us"), cpu_quota_us(limits.cpus) if limits.cpus else -1)
        _write(os.path.join(self.dirs["pids"], "pids.max"), limits.tasks if limits.tasks is not None else "max")
        if limits.gpus is not None:
            uvm = char_major("nvidia-uvm")
            _write(os.path.join(dev, "devices.deny"), "a")
            for rule in device_allow_rules(limits.gpus, extra_majors=[uvm] if uvm else []):
                _write(os.path.join(dev, "devices.allow"), rule)


def set_v1_memory(folder: str, limit: int) -> None:
    """memory.limit_in_bytes and, where swap accounting exists, memory.memsw.limit_in_bytes (memory + swap)
    to the same value, so the group cannot swap past its limit. The kernel keeps memsw >= the limit at
    every step: lowering writes the limit first, raising writes memsw first."""
    mem = os.path.join(folder, "memory.limit_in_bytes")
    memsw = os.path.join(folder, "memory.memsw.limit_in_bytes")
    files = [mem, memsw] if os.path.exists(memsw) else [mem]
    if limit > int(_read(mem, "0") or 0):
        files.reverse()
    for f in files:
        _write(f, limit)


class V1Backend(FsBackend):
    name = "cgroupfs-v1"

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "posehub"):
        missing = [c for c in V1_CONTROLLERS if not os.path.isdir(os.path.join(root, c))]
        if missing:
            raise CgroupError(f"The cgroup v1 controllers {', '.join(missing)} are not mounted under {root}; mount "
                              f"them (e.g. `mount -t cgroup -o {missing[0]} cgroup {root}/{missing[0]}`) so that "
                              "the hub can set resource limits.")
        own = own_paths()
        self.root = root
        self.parents = {c: _make_parent(os.path.join(_under_own(os.path.join(root, c), own.get(c, "/")),
                                                     check_name(parent)))
                        for c in V1_CONTROLLERS}
        for path in self.parents.values():
            _write(os.path.join(path, "notify_on_release"), 0)

    def _sandbox(self, name: str) -> V1Sandbox:
        return V1Sandbox(name, {c: os.path.join(p, name) for c, p in self.parents.items()})

    def _weigh_parent(self) -> None:
        cpu = self.parents["cpu"]
        groups = sum(1 for e in os.scandir(cpu) if e.is_dir())
        _write(os.path.join(cpu, "cpu.shares"), CPU_SHARES * max(1, groups))

    def _from_state(self, state: dict) -> V1Sandbox:
        dirs = state.get("dirs")
        dirs = dirs if isinstance(dirs, dict) and set(dirs) == set(V1_CONTROLLERS) else {}
        return V1Sandbox(state["name"], {c: str(d) for c, d in dirs.items()})

    def describe(self) -> str:
        where: dict[str, list[str]] = {}  # the hub's own group may differ per controller
        for c, p in self.parents.items():
            where.setdefault(p.replace(f"{self.root}/{c}/", f"{self.root}/<ctrl>/", 1), []).append(c)
        places = [f"{p} ({', '.join(cs)})" for p, cs in where.items()] if len(where) > 1 else list(where)
        return f"limits: cgroup v1 filesystem ({', '.join(V1_CONTROLLERS)}) under {' and '.join(places)}"


# ---------------------------------------------------------------- cgroup v2 (not exercised by the tests here)


class V2Sandbox(FsSandbox):
    """A group of the unified hierarchy: one folder."""

    def __init__(self, name: str, path: str):
        self.name, self.path = name, path

    def folders(self) -> list[str]:
        return [self.path]

    def state(self) -> dict:
        return {"backend": "cgroupfs-v2", "name": self.name, "path": self.path}

    def pids(self) -> list[int]:
        return _procs(self.path)

    def _kill_round(self) -> set[int]:
        """``cgroup.kill`` (Linux 5.14+) where present, else freeze, SIGKILL, thaw."""
        pids = set(self.pids())
        kill, freeze = os.path.join(self.path, "cgroup.kill"), os.path.join(self.path, "cgroup.freeze")
        try:
            if os.path.exists(kill):
                _write(kill, 1)
                return pids
            _write(freeze, 1)
            try:
                return _kill(self.pids())
            finally:
                _write(freeze, 0)
        except CgroupError:
            return set()  # removed meanwhile

    def stats(self) -> dict:
        return {
            "memory_bytes": int(_read(os.path.join(self.path, "memory.current"), "0")),
            "oom_kills": _field(_read(os.path.join(self.path, "memory.events")), "oom_kill"),
            "cpu_seconds": _field(_read(os.path.join(self.path, "cpu.stat")), "usage_usec") / 1e6,
        }

    def apply(self, limits: Limits) -> None:
        p = self.path
        _write(os.path.join(p, "memory.max"), limits.memory_bytes if limits.memory_bytes is not None else "max")
        if limits.memory_bytes is not None and os.path.exists(os.path.join(p, "memory.swap.max")):
            _write(os.path.join(p, "memory.swap.max"), 0)
        _write(os.path.join(p, "cpu.max"), f"{cpu_quota_us(limits.cpus) if limits.cpus else 'max'} 100000")
        _write(os.path.join(p, "pids.max"), limits.tasks if limits.tasks is not None else "max")


class V2Backend(FsBackend):
    """GPU device files are not restricted here: cgroup v2 does that with a BPF program only
    (``devices_enforced`` is False and :meth:`describe` says so)."""

    name = "cgroupfs-v2"
    devices_enforced = False

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "posehub"):
        self.root = root
        mine = _under_own(root, own_paths().get("", "/"))
        if os.path.basename(mine) == V2_LEAF:
            mine = os.path.dirname(mine)  # we moved ourselves into the leaf at an earlier start
        missing = [c for c in V2_CONTROLLERS if c not in _read(os.path.join(mine, "cgroup.controllers")).split()]
        if missing:
            raise CgroupError(f"The cgroup v2 controllers {', '.join(missing)} are not delegated to {mine}; "
                              "enable them in the parent's cgroup.subtree_control (or run the hub as a systemd "
                              "service) so that the hub can set resource limits.")
        self._enable(mine)
        self.parent = _make_parent(os.path.join(mine, check_name(parent)))
        self._enable(self.parent)

    @staticmethod
    def _enable(folder: str) -> None:
        """Enable our controllers for the children of ``folder``. cgroup v2 allows that only in a group without
        processes of its own, so when the hub's group has some they move into a leaf ``<folder>/posehub-hub``."""
        line = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        try:
            with open(os.path.join(folder, "cgroup.subtree_control"), "w") as f:
                f.write(line)
            return
        except OSError:
            pass
        leaf = _make_parent(os.path.join(folder, V2_LEAF))
        for pid in _procs(folder):
            try:
                _write(os.path.join(leaf, "cgroup.procs"), pid)
            except CgroupError:
                pass  # exited meanwhile, or a kernel thread
        _write(os.path.join(folder, "cgroup.subtree_control"), line)

    def _sandbox(self, name: str) -> V2Sandbox:
        return V2Sandbox(name, os.path.join(self.parent, name))

    def _weigh_parent(self) -> None:
        groups = sum(1 for e in os.scandir(self.parent) if e.is_dir())
        _write(os.path.join(self.parent, "cpu.weight"), min(10_000, CPU_WEIGHT * max(1, groups)))

    def _from_state(self, state: dict) -> V2Sandbox:
        return V2Sandbox(state["name"], state.get("path"))

    def describe(self) -> str:
        return (f"limits: cgroup v2 filesystem ({', '.join(V2_CONTROLLERS)}) under {self.parent}; GPU device files "
                "are NOT restricted (devices_enforced=False: cgroup v2 needs a BPF device program for that)")


# ---------------------------------------------------------------- systemd (not exercised by the tests here)


def _systemctl(*args: str) -> str:
    try:
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


class SystemdSandbox(Sandbox):
    """A transient scope unit: ``wrap()`` starts the command in it with systemd-run, which also sets the
    limits and becomes the user."""

    drops_privileges = True

    def __init__(self, name: str, unit: str, limits: Limits = Limits()):
        self.name, self.unit, self.limits = name, unit, limits

    def state(self) -> dict:
        return {"backend": "systemd", "name": self.name, "unit": self.unit}

    def properties(self) -> list[str]:
        lim, props = self.limits, []
        if lim.memory_bytes is not None:
            props += [f"MemoryMax={lim.memory_bytes}", "MemorySwapMax=0"]
        if lim.cpus is not None:
            props.append(f"CPUQuota={max(1, round(lim.cpus * 100))}%")
        if lim.tasks is not None:
            props.append(f"TasksMax={lim.tasks}")
        if lim.gpus is not None:
            # closed: only the pseudo devices (null, zero, full, random, urandom, tty, ptmx) and what is listed
            props += ["DevicePolicy=closed", "DeviceAllow=char-pts rw"]
            if lim.gpus:
                props += [f"DeviceAllow=/dev/nvidia{g} rw" for g in sorted(set(lim.gpus))]
                props += ["DeviceAllow=/dev/nvidiactl rw", "DeviceAllow=/dev/nvidia-modeset rw",
                          "DeviceAllow=char-nvidia-uvm rw"]
        return props

    def wrap(self, cmd: list[str], uid: int, gid: int) -> list[str]:
        out = ["systemd-run", "--scope", "--quiet", "--collect", "--unit", self.unit]
        for prop in self.properties():
            out += ["-p", prop]
        return [*out, "--uid", str(uid), "--gid", str(gid), "--", *cmd]

    def _folder(self) -> str | None:
        cg = _systemctl("show", "-p", "ControlGroup", "--value", self.unit).strip()
        for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
            if cg and os.path.exists(os.path.join(mount + cg, "cgroup.procs")):
                return mount + cg
        return None

    def pids(self) -> list[int]:
        folder = self._folder()
        return _procs(folder) if folder else []

    def kill_all(self, timeout: float = 10.0) -> int:
        pids = self.pids()
        if pids:
            _systemctl("kill", "--signal=KILL", self.unit)
            if left := _wait_empty(self.pids, timeout):
                raise _survivors(self.name, left, timeout)
        return len(pids)

    def remove(self) -> None:
        self.kill_all()
        _systemctl("stop", self.unit)
        _systemctl("reset-failed", self.unit)

    def stats(self) -> dict:
        show = _systemctl("show", "-p", "MemoryCurrent", "-p", "CPUUsageNSec", self.unit)
        values = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
        folder = self._folder()
        number = lambda key: int(values[key]) if values.get(key, "").isdigit() else 0  # noqa: E731
        return {
            "memory_bytes": number("MemoryCurrent"),
            "oom_kills": _field(_read(os.path.join(folder, "memory.events")), "oom_kill") if folder else 0,
            "cpu_seconds": number("CPUUsageNSec") / 1e9,
        }


class SystemdBackend(Backend):
    name = "systemd"

    def __init__(self, parent: str = "posehub"):
        self.parent = check_name(parent)

    def create(self, name: str, limits: Limits) -> Sandbox:
        box = SystemdSandbox(check_name(name), f"{self.parent}-{name}.scope", limits)
        box.remove()  # the scope itself comes into being when wrap()'s command starts
        return box

    def restore(self, state: dict) -> Sandbox:
        self._check_state(state)
        unit = state.get("unit")
        if unit != f"{self.parent}-{state['name']}.scope":
            raise CgroupError(f"The recorded unit {unit!r} is not one of this hub's; stop the server from the hub "
                              "and start it again.")
        return SystemdSandbox(state["name"], unit)

    def describe(self) -> str:
        return (f"limits: systemd scopes ({self.parent}-<name>.scope via systemd-run) with MemoryMax, CPUQuota, "
                "TasksMax and DevicePolicy/DeviceAllow")


# ---------------------------------------------------------------- choosing


def detect(*, root: str = "/sys/fs/cgroup", parent: str = "posehub", prefer: str = "auto") -> Backend:
    """The backend this machine supports: systemd where systemd is PID 1 (and systemd-run is installed),
    else the cgroup filesystem (v1 where per-controller folders are mounted, else v2). ``prefer`` forces one
    of :data:`PREFER`. Raises :class:`CgroupError` saying what to change when none can be used."""
    if prefer not in PREFER:
        raise CgroupError(f"Unknown control-group backend {prefer!r}; use one of: {', '.join(PREFER)}.")
    check_name(parent)
    if os.geteuid() != 0:
        raise CgroupError("Setting resource limits with control groups needs root: run the hub as root.")
    systemd = os.path.isdir("/run/systemd/system") and shutil.which("systemd-run") and shutil.which("systemctl")
    if prefer == "systemd" or (prefer == "auto" and systemd):
        if not systemd:
            raise CgroupError("The systemd backend was asked for, but systemd does not run this machine (no "
                              "/run/systemd/system, or no systemd-run); ask for 'auto' or 'cgroupfs' instead.")
        return SystemdBackend(parent)
    v1 = os.path.isdir(os.path.join(root, "memory")) or os.path.isdir(os.path.join(root, "freezer"))
    v2 = os.path.isfile(os.path.join(root, "cgroup.controllers"))
    if prefer == "cgroupfs-v2" or (not v1 and v2 and prefer != "cgroupfs-v1"):
        if not v2:
            raise CgroupError(f"cgroup v2 was asked for, but {root} is not a cgroup v2 mount; ask for 'auto'.")
        return V2Backend(root, parent)
    if not v1:
        raise CgroupError(f"No cgroup filesystem is mounted at {root}; mount it (`mount -t cgroup2 none {root}`) "
                          "so that the hub can set resource limits.")
    return V1Backend(root, parent)
