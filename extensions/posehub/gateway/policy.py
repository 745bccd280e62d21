"""Pure policy of Dask clusters: worker profiles, per-user limits, the budget, the cluster config.

No I/O here: the backend passes in what it knows (the user's running clusters,
their remaining budget) and gets back either the configuration of the new
cluster or a :class:`Refused` with the sentence to show the user.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from .. import environments, profiles
from ..config import PoseHubConfig

SERVICE = "dask-gateway"
# Resource every CPU worker advertises: one ensemble member (one training) at a time per worker.
MEMBER_RESOURCE = "member"
GPU_RESOURCE = "GPU"
GPU_OWNER = "dask:"  # owners of workers' GPUs in the machine's pool: "dask:<cluster>/<worker>"


WORKER_PROFILES_ENV = "POSEHUB_WORKER_PROFILES"  # in a workspace: the worker profiles it may ask for (profiles_env)


class Refused(Exception):
    """A cluster that may not start; ``str()`` is the message for the user."""


def money(amount) -> str:
    return f"${Decimal(amount).quantize(Decimal('0.01')):,.2f}"


def worker_profiles(cfg: PoseHubConfig, user: str, groups: Iterable[str], admin: bool = False,
                    effective: list[dict] | None = None) -> list[dict]:
    """Profiles the user may run Dask workers with: those they may use (with admins' run-time settings when
    ``effective`` is given, as for servers), in config order, restricted to ``dask.worker_profiles`` when set."""
    names = cfg["dask"].get("worker_profiles") or [p["slug"] for p in cfg["profiles"]]
    allowed = {p["slug"]: p for p in profiles.allowed_profiles(cfg, user, groups, admin, effective)}
    return [allowed[s] for s in names if s in allowed]


def profiles_env(cfg: PoseHubConfig, user: str, groups: Iterable[str], admin: bool = False,
                 effective: list[dict] | None = None) -> str:
    """``POSEHUB_WORKER_PROFILES`` of a workspace: the worker profiles the user may use (JSON, in order,
    the default first), so notebooks can show names and prices (the gateway still checks every request)."""
    offered = worker_profiles(cfg, user, groups, admin, effective)
    if not offered:
        return "[]"
    first = default_profile(cfg, offered)
    offered.sort(key=lambda p: p["slug"] != first)
    keys = ("slug", "display_name", "description", "cpu", "memory", "gpus", "price_per_hour")
    return json.dumps([{k: p.get(k) for k in keys} for p in offered])


def default_profile(cfg: PoseHubConfig, offered: Sequence[dict]) -> str:
    wanted = cfg["dask"].get("default_worker_profile") or ""
    slugs = [p["slug"] for p in offered]
    return wanted if wanted in slugs else slugs[0]


def check_profile(cfg: PoseHubConfig, slug, offered: Sequence[dict]) -> dict:
    """The offered profile named ``slug``, or Refused saying why not."""
    slugs = [p["slug"] for p in offered]
    if not isinstance(slug, str):
        raise Refused(f"profile must be a string, one of: {', '.join(slugs)}")
    for p in offered:
        if p["slug"] == slug:
            return p
    if cfg.profile(slug) is not None:
        raise Refused(f"Worker profile '{slug}' is not open to you. Profiles you may use: {', '.join(slugs)}. "
                      f"Ask {cfg['hub']['admin_contact']} for access.")
    raise Refused(f"Unknown worker profile '{slug}'. Profiles you may use: {', '.join(slugs)}.")


@dataclass(frozen=True)
class Running:
    """A cluster of the user already running: its worker profile and its worker limit."""

    name: str
    profile: str
    max_workers: int


def max_workers(cfg: PoseHubConfig, profile: dict, running: Sequence[Running], remaining: Decimal,
                block_hours: Decimal, budget_total: Decimal, period: str,
                free_gpus: int | None = None, machine_gpus: int = 0) -> int:
    """How many workers a new cluster of ``profile`` may have; Refused if none, or no cluster at all.

    * ``dask.max_clusters_per_user``: clusters at once;
    * ``dask.max_workers_per_user``: workers over all the user's clusters (each
      running cluster holds its own limit);
    * ``dask.max_gpus_per_user``: GPUs over all the user's clusters;
    * on one machine, the GPUs free right now (``free_gpus`` of ``machine_gpus``;
      ``None`` where the scheduler of the cluster, e.g. Kubernetes, places them);
    * the budget: every worker needs the profile's minimum block
      (``budgets.minimum_block_hours`` at its price) from what is left.
    """
    d = cfg["dask"]
    contact = cfg["hub"]["admin_contact"]
    if len(running) >= d["max_clusters_per_user"]:
        names = ", ".join(r.name for r in running) or "none"
        raise Refused(f"You already run {len(running)} Dask cluster(s), the most you may run at once is "
                      f"{d['max_clusters_per_user']}. Shut one down first (cluster.shutdown(), or "
                      f"dask_gateway.Gateway().stop_cluster(name)); running: {names}.")
    held = sum(r.max_workers for r in running)
    limit = d["max_workers_per_user"] - held
    if limit < 1:
        raise Refused(f"Your running Dask clusters already hold {held} of the {d['max_workers_per_user']} workers "
                      f"you may have at once. Shut one down first.")
    gpus = int(profile.get("gpus") or 0)
    if gpus:
        held_gpus = sum(r.max_workers * _gpus(cfg, r.profile) for r in running)
        by_gpu = (d["max_gpus_per_user"] - held_gpus) // gpus
        if by_gpu < 1:
            raise Refused(f"Workers of '{profile['display_name']}' need {gpus} GPU(s) each and you may hold "
                          f"{d['max_gpus_per_user']} GPU(s) at once ({held_gpus} held by your running clusters). "
                          f"Pick a CPU worker profile, or ask {contact}.")
        limit = min(limit, by_gpu)
        if free_gpus is not None:
            if free_gpus // gpus < 1:
                where = (f"{free_gpus} of this machine's {machine_gpus} GPU(s) are free (the others are held by "
                         f"JupyterLab servers and Dask workers)" if machine_gpus else
                         "this machine has no GPU (none found by nvidia-smi, none declared in gpus.devices)")
                raise Refused(f"Workers of '{profile['display_name']}' need {gpus} GPU(s) each and {where}. "
                              f"Try again when one is released, or pick a CPU worker profile.")
            limit = min(limit, free_gpus // gpus)
    price = Decimal(str(profile["price_per_hour"]))
    block = price * block_hours
    if block > 0:
        by_budget = int(max(remaining, Decimal(0)) // block)
        if by_budget < 1:
            raise Refused(
                f"Not enough budget to start a Dask cluster of '{profile['display_name']}' workers: one worker "
                f"needs {money(block)} for a first block of {block_hours.normalize():f} h at {money(price)}/h, "
                f"and you have {money(max(remaining, Decimal(0)))} left of {money(budget_total)} for {period}. "
                f"Pick a cheaper worker profile, or ask {contact} for more budget.")
        limit = min(limit, by_budget)
    return limit


def _gpus(cfg: PoseHubConfig, slug: str) -> int:
    p = cfg.profile(slug)
    return int(p.get("gpus") or 0) if p else 0


def env_bin(image: str) -> Path:
    return environments.env_dir(image) / "bin"


def cluster_config(cfg: PoseHubConfig, profile: dict, workers: int, *, config_path: str = "") -> dict:
    """The ClusterConfig overrides of a cluster whose workers run ``profile``: commands of the
    profile's image environment (``dask scheduler``/``dask worker``: the old ``dask-scheduler``
    and ``dask-worker`` commands are gone from current Dask), cores, memory, resources."""
    d = cfg["dask"]
    image = profile["image"]
    binary = env_bin(image)
    cores = max(1, math.ceil(float(profile["cpu"])))
    gpus = int(profile.get("gpus") or 0)
    env = {
        "PATH": f"{binary}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(environments.env_dir(image)),
        "POSEHUB_IMAGE": image,
        "POSEHUB_PROFILE": profile["slug"],
        "OMP_NUM_THREADS": str(cores),
        # a member whose worker dies is run again, this many times in all, then reported failed
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(d["task_retries"]),
        "PYTHONUNBUFFERED": "1",
    }
    if config_path:
        env["POSEHUB_CONFIG"] = config_path
    # the whole mapping in one variable: Dask lowercases the names in DASK_..._RESOURCES__<NAME> ("gpu"), and
    # resource names are case-sensitive, so GPU members would never be placed
    env["DASK_DISTRIBUTED__WORKER__RESOURCES"] = json.dumps({GPU_RESOURCE: gpus} if gpus else {MEMBER_RESOURCE: 1})
    return {
        "scheduler_cmd": [str(binary / "dask"), "scheduler"],
        "worker_cmd": [str(binary / "dask"), "worker"],
        "worker_cores": cores,
        "worker_threads": cores,
        "worker_memory": profiles.memory_bytes(profile["memory"]),
        "scheduler_cores": 1,
        "scheduler_memory": 1 << 30,
        "cluster_max_workers": workers,
        "idle_timeout": float(d["idle_timeout_minutes"]) * 60,
        "environment": env,
    }


def gpu_owner(cluster: str, worker: str) -> str:
    """The owner of a Dask worker's GPUs in the machine's GPU pool (servers are ``server:<user>/<name>``)."""
    return f"{GPU_OWNER}{cluster}/{worker}"



def worker_resource_id(cluster: str, worker: str) -> str:
    """The ledger's resource id of a Dask worker."""
    return f"{cluster}/{worker}"


def cluster_of(resource_id: str) -> str:
    return resource_id.split("/", 1)[0]
