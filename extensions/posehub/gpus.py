"""GPUs on one machine: discovery, and exclusive allocation to servers and Dask workers.

:class:`GpuPool` is pure bookkeeping (no I/O) so it can be tested directly;
:class:`SharedGpuPool` is the same bookkeeping kept in a file under a lock, so
that the hub (servers) and the Dask Gateway (workers), two processes, hand out
each GPU once; :func:`discover` asks ``nvidia-smi``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

LOCK_TIMEOUT = 5.0  # seconds the GPU file's lock is waited for


class NoFreeGpu(Exception):
    """Not enough free GPUs for a request. ``str(err)`` is the user-facing message."""


def discover(nvidia_smi: str = "nvidia-smi") -> list[int]:
    """GPU indices reported by ``nvidia-smi -L``; [] when there is none or no driver."""
    exe = shutil.which(nvidia_smi)
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi_list(out)


def parse_nvidia_smi_list(text: str) -> list[int]:
    """``GPU 0: NVIDIA H200 (UUID: ...)`` lines -> [0, ...]."""
    return [int(m.group(1)) for m in re.finditer(r"^GPU (\d+):", text, re.M)]


def devices_from_config(setting) -> list[int]:
    return discover() if setting == "auto" else list(setting)


class GpuPool:
    """Exclusive GPU indices, handed out to owners (a server's ``server:<user>/<name>``, a Dask worker's
    ``dask:<cluster>/<worker>``)."""

    def __init__(self, devices: list[int]):
        self.devices = list(devices)
        self._owner: dict[int, str] = {}
        self._lock = threading.RLock()

    @contextmanager
    def _transaction(self):
        """Every public method runs inside one: here a thread lock; :class:`SharedGpuPool` adds the file."""
        with self._lock:
            yield

    def free(self) -> list[int]:
        with self._transaction():
            return [d for d in self.devices if d not in self._owner]

    def held_by(self, owner: str) -> list[int]:
        with self._transaction():
            return [d for d, o in self._owner.items() if o == owner]

    def owners(self) -> dict[int, str]:
        with self._transaction():
            return dict(self._owner)

    def check(self, count: int) -> None:
        """Raise :class:`NoFreeGpu` with a user-facing message unless ``count`` GPUs are free."""
        free = self.free()
        if len(free) >= count:
            return
        plural = "s" if count > 1 else ""
        if not self.devices:
            raise NoFreeGpu(
                f"This profile needs {count} GPU{plural}, but this machine has no GPU "
                "(none found by nvidia-smi, none declared in gpus.devices)."
            )
        busy = len(self.devices) - len(free)
        raise NoFreeGpu(
            f"This profile needs {count} GPU{plural}, but only {len(free)} of {len(self.devices)} "
            f"{'is' if len(self.devices) == 1 else 'are'} free ({busy} in use by other servers or Dask workers). "
            "Pick a CPU profile or try again when one is released."
        )

    def acquire(self, owner: str, count: int) -> list[int]:
        """Take ``count`` free GPUs for ``owner`` (all or none)."""
        with self._transaction():
            held = self.held_by(owner)
            if held:
                return held
            self.check(count)
            taken = self.free()[:count]
            for d in taken:
                self._owner[d] = owner
            return taken

    def restore(self, owner: str, indices: list[int]) -> None:
        """Re-register GPUs of a server that was running before a hub restart."""
        with self._transaction():
            for d in indices:
                self._owner[d] = owner

    def release(self, owner: str) -> None:
        with self._transaction():
            for d in self.held_by(owner):
                del self._owner[d]

    def release_matching(self, prefix: str, keep=()) -> list[str]:
        """Release every owner starting with ``prefix`` except those in ``keep`` (what a process that lost
        track of its holders, e.g. after a crash, gives back); returns the owners released."""
        with self._transaction():
            gone = sorted({o for o in self._owner.values() if o.startswith(prefix) and o not in set(keep)})
            self._owner = {d: o for d, o in self._owner.items() if o not in gone}
            return gone


class SharedGpuPool(GpuPool):
    """A :class:`GpuPool` kept in a JSON file (``{"owners": {"0": "server:alice/", ...}}``), read and
    written under an exclusive ``flock`` for each operation, so several processes share it."""

    def __init__(self, devices: list[int], path: str | os.PathLike):
        super().__init__(devices)
        self.path = Path(path)
        self._depth = 0

    @contextmanager
    def _transaction(self):
        with self._lock:
            if self._depth:  # nested call of this thread: the file is already locked and read
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                self._flock(lock)
                self._owner = self._read()
                before = dict(self._owner)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    if self._owner != before:
                        self._write()

    def _flock(self, lock, timeout: float = LOCK_TIMEOUT) -> None:
        """The file's lock, waited for ``timeout`` seconds at most (a process stuck holding it must not freeze the
        hub's event loop): then NoFreeGpu says so."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NoFreeGpu(f"The machine's GPU list ({self.path}) stayed locked for {timeout:.0f} s by "
                                    "another process; try again in a minute.") from None
                time.sleep(0.02)

    def _read(self) -> dict[int, str]:
        try:
            data = json.loads(self.path.read_text())
            return {int(d): str(o) for d, o in data.get("owners", {}).items()}
        except FileNotFoundError:
            return {}
        except (ValueError, AttributeError, TypeError):  # not this pool's file (it is replaced whole, never torn)
            return {}

    def _write(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"owners": {str(d): o for d, o in sorted(self._owner.items())}}, indent=1))
        os.replace(tmp, self.path)


def shared_pool(state_dir: str | os.PathLike, setting) -> SharedGpuPool:
    """The machine's pool, as the hub and the Dask Gateway both open it (``gpus.devices`` of posehub.yaml)."""
    return SharedGpuPool(devices_from_config(setting), Path(state_dir) / "gpus.json")
