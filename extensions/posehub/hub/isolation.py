"""Isolation on one machine, in one place for the hub's spawner, the Dask Gateway's backend and ``posehub up``.

With ``isolation.mode: accounts`` (the default) every user runs as their own
system account (:mod:`posehub.hub.accounts`) and every server, Dask scheduler
and Dask worker in its own control group (:mod:`posehub.hub.cgroups`) holding
the profile's limits (:mod:`posehub.hub.limits`). This module names the
groups, builds the limits of a profile, starts a process inside its group as
its account, and checks at start that the machine can do all this.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from .. import environments, profiles
from ..config import ONE_PERSON, PoseHubConfig
from . import accounts, cgroups
from .limits import Limits, memory_fits

_backends: dict[tuple, cgroups.Backend] = {}


def parent_name(cfg: PoseHubConfig) -> str:
    """The control group holding this hub's servers and workers (one per state folder, so two hubs on one
    machine never touch each other's groups)."""
    return "posehub-" + hashlib.sha256(str(cfg.state_dir.resolve()).encode()).hexdigest()[:10]


def backend(cfg: PoseHubConfig) -> cgroups.Backend:
    """The machine's control-group backend (detected once per process). Raises :class:`cgroups.CgroupError`."""
    key = (parent_name(cfg), cfg["isolation"]["cgroups"])
    if key not in _backends:
        _backends[key] = cgroups.detect(parent=key[0], prefer=key[1])
    return _backends[key]


def unit_name(kind: str, *parts: str) -> str:
    """``server-posehub-alice``, ``dask-<cluster>-worker-<name>``: a control group's name from safe parts."""
    raw = "-".join([kind, *[p for p in parts if p]])
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-.")
    if clean != raw or len(clean) > 100:
        clean = clean[:80] + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return clean


def account(cfg: PoseHubConfig, hub_name: str) -> accounts.Account:
    iso = cfg["isolation"]
    return accounts.ensure_account(hub_name, prefix=iso["account_prefix"], group=iso["group"],
                                   homes_dir=homes_dir(cfg))


def homes_dir(cfg: PoseHubConfig) -> Path:
    return cfg.data_dir / "homes"


def home_of(cfg: PoseHubConfig, hub_name: str) -> Path:
    return accounts.home_of(hub_name, prefix=cfg["isolation"]["account_prefix"], homes_dir=homes_dir(cfg))


def profile_limits(cfg: PoseHubConfig, profile: dict, gpus=()) -> Limits:
    return Limits(memory_bytes=profiles.memory_bytes(profile["memory"]), cpus=float(profile["cpu"]),
                  tasks=cfg["isolation"]["max_processes"], gpus=tuple(gpus))


def machine_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_refusal(cfg: PoseHubConfig, profile: dict) -> str:
    """Why this machine cannot hold the profile's memory ('' when it can)."""
    if not cfg.isolated:
        return ""
    return memory_fits(profiles.memory_bytes(profile["memory"]), machine_memory_bytes())


def preexec_fn(sandbox: cgroups.Sandbox | None, acct: accounts.Account | None, cwd: Path):
    """What runs in a new process between fork and exec: join the control group (as root), then become the
    account (unless the backend's own launcher does, as ``systemd-run --uid`` does), then enter ``cwd``."""
    uid, gid, groups = (acct.uid, acct.gid, list(acct.groups)) if acct else (None, None, None)
    drop = acct is not None and not (sandbox is not None and sandbox.drops_privileges)

    def preexec():
        if sandbox is not None:
            sandbox.preexec()
        if drop:
            os.setgid(gid)
            os.setgroups(groups)
            os.setuid(uid)
        os.chdir(cwd)

    return preexec


# ---------------------------------------------------------------- checks at start


def _unreachable(path: Path) -> Path | None:
    """The first folder above ``path`` that other accounts cannot enter (no o+x), or None."""
    for folder in [*reversed(Path(path).resolve().parents)]:
        try:
            mode = folder.stat().st_mode
        except OSError:
            return folder
        if not mode & stat.S_IXOTH:
            return folder
    return None


def problems(cfg: PoseHubConfig) -> list[str]:
    """What stops this machine from running PoseHub with the configured isolation (sentences)."""
    if not cfg.isolated:
        return []
    out = []
    if os.geteuid() != 0:
        return ["isolation.mode 'accounts' gives every user their own system account and control group, which "
                "needs root: run the hub as root (`sudo make up`), or, on your own workstation with no one else "
                f"signing in, set isolation.mode: {ONE_PERSON}"]
    try:
        backend(cfg)
    except cgroups.CgroupError as e:
        out.append(str(e))
    images = {p["image"] for p in cfg["profiles"]}
    for image in sorted(i for i in images if environments.is_built(i)):
        python = Path(os.path.realpath(environments.env_dir(image) / "bin" / "python"))
        blocked = _unreachable(environments.env_dir(image)) or _unreachable(python)
        if blocked is not None:
            out.append(f"the environment of image '{image}' ({environments.env_dir(image)}) cannot be reached by "
                       f"the users' accounts: {blocked} is not enterable by others. Allow it with "
                       f"`chmod o+x {blocked}`, or install PoseHub in a folder every account can enter")
            break
    blocked = _unreachable(cfg.data_dir)
    if blocked is not None and blocked != cfg.data_dir:
        out.append(f"hub.data_dir ({cfg.data_dir}) cannot be reached by the users' accounts: {blocked} is not "
                   f"enterable by others. Allow it with `chmod o+x {blocked}`, or set hub.data_dir elsewhere")
    return out


def secure_folders(cfg: PoseHubConfig) -> None:
    """The state folder is the hub's alone (0700, and everything in it unreadable to others); the data
    folder is enterable (0711) and its homes, mounts and cluster folders listable by no one but root."""
    state = cfg.state_dir
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o700)
    if not cfg.isolated:
        return
    data = cfg.data_dir
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o711)
    for sub in ("homes", "mounts", "dask-clusters"):
        (data / sub).mkdir(exist_ok=True)
        os.chmod(data / sub, 0o711)


def describe(cfg: PoseHubConfig) -> str:
    """One line for the log at start: how users are kept apart on this machine."""
    if not cfg.isolated:
        return (f"isolation: {ONE_PERSON}: every server runs as this hub's own account "
                f"(uid {os.geteuid()}) with no limits; for one person's own workstation only")
    iso = cfg["isolation"]
    return (f"isolation: one system account per user ({iso['account_prefix']}<name>, group {iso['group']}, "
            f"homes in {homes_dir(cfg)}); {backend(cfg).describe()}")
