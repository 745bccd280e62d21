"""Resource limits of one server or Dask process, and the arithmetic behind them (no I/O).

:class:`Limits` says what one control group may use; :mod:`posehub.hub.cgroups` applies it.
:func:`device_allow_rules` is the device list of a group whose GPUs are restricted (cgroup v1
``devices.allow`` lines), :func:`cpu_quota_us` turns cores into a CFS quota and
:func:`memory_fits` checks a profile against the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

NVIDIA_MAJOR = 195  # /dev/nvidia0, /dev/nvidia1, ... are character devices 195:N
NVIDIA_CONTROL_MINORS = (255, 254)  # /dev/nvidiactl, /dev/nvidia-modeset

# What every process may open when devices are restricted: the pseudo devices and terminals
# (the usual container set, minus everything optional such as /dev/fuse or /dev/net/tun).
BASE_DEVICE_RULES = (
    "c 1:3 rwm",  # /dev/null
    "c 1:5 rwm",  # /dev/zero
    "c 1:7 rwm",  # /dev/full
    "c 1:8 rwm",  # /dev/random
    "c 1:9 rwm",  # /dev/urandom
    "c 5:0 rwm",  # /dev/tty
    "c 5:1 rwm",  # /dev/console
    "c 5:2 rwm",  # /dev/ptmx (new terminals)
    "c 136:* rwm",  # /dev/pts/* (Jupyter terminals)
)


@dataclass(frozen=True)
class Limits:
    """What one group may use; ``None`` leaves that resource unlimited."""

    memory_bytes: int | None = None  # hard memory limit, no swap beyond it
    cpus: float | None = None  # CPU time quota in cores (0.5 = half a core)
    tasks: int | None = None  # max processes + threads
    gpus: tuple[int, ...] | None = None  # None: devices left alone; (): no NVIDIA device; (0, 2): only those


def cpu_quota_us(cpus: float, period_us: int = 100_000) -> int:
    """CFS quota per ``period_us`` for ``cpus`` cores (1.5 -> 150000); at least the kernel's 1 ms."""
    if cpus <= 0:
        raise ValueError(f"cpus must be positive, not {cpus}")
    return max(1000, round(cpus * period_us))


def device_allow_rules(gpus: tuple[int, ...], extra_majors=()) -> list[str]:
    """``devices.allow`` lines for a group that denies every device first: :data:`BASE_DEVICE_RULES`,
    then ``/dev/nvidiaN`` for each GPU with the control devices, and every minor of each of
    ``extra_majors`` (NVIDIA helpers with a dynamic major, such as nvidia-uvm). With ``gpus=()`` no
    NVIDIA device, helpers included, is allowed."""
    rules = list(BASE_DEVICE_RULES)
    if gpus:
        rules += [f"c {NVIDIA_MAJOR}:{int(g)} rwm" for g in sorted(set(gpus))]
        rules += [f"c {NVIDIA_MAJOR}:{m} rwm" for m in NVIDIA_CONTROL_MINORS]
        rules += [f"c {int(major)}:* rwm" for major in extra_majors]
    return rules


def format_bytes(n: int) -> str:
    """``34359738368`` -> ``'32 GiB'``, ``25125558681`` -> ``'23.4 GiB'``, under a GiB in MiB."""
    value, unit = (n / 2**30, "GiB") if n >= 2**30 else (n / 2**20, "MiB")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def memory_fits(memory_bytes: int, machine_bytes: int) -> str:
    """'' when a profile's memory fits in the machine's, else the sentence that tells the admin."""
    if memory_bytes <= machine_bytes:
        return ""
    return (
        f"The profile asks for {format_bytes(memory_bytes)} of memory; this machine has "
        f"{format_bytes(machine_bytes)}. Lower the profile's `memory` in posehub.yaml."
    )
