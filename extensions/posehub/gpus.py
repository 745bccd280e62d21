"""GPUs on one machine: discovery, and exclusive allocation to servers.

:class:`GpuPool` is pure bookkeeping (no I/O) so it can be tested directly;
:func:`discover` asks ``nvidia-smi``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading


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
    """Exclusive GPU indices, handed out to owners (server names)."""

    def __init__(self, devices: list[int]):
        self.devices = list(devices)
        self._owner: dict[int, str] = {}
        self._lock = threading.Lock()

    def free(self) -> list[int]:
        return [d for d in self.devices if d not in self._owner]

    def held_by(self, owner: str) -> list[int]:
        return [d for d, o in self._owner.items() if o == owner]

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
            f"{'is' if len(self.devices) == 1 else 'are'} free ({busy} in use by other servers). "
            "Pick a CPU profile or try again when one is released."
        )

    def acquire(self, owner: str, count: int) -> list[int]:
        """Take ``count`` free GPUs for ``owner`` (all or none)."""
        with self._lock:
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
        with self._lock:
            for d in indices:
                self._owner[d] = owner

    def release(self, owner: str) -> None:
        with self._lock:
            for d in self.held_by(owner):
                del self._owner[d]
