"""The one-machine gateway backend: local processes, PoseHub's policy, every worker metered.

:class:`PoseHubLocalBackend` is Dask Gateway's ``LocalBackend``: schedulers and
workers run as the cluster owner's system account (the one their JupyterLab
server runs as, :mod:`posehub.hub.accounts`), each in its own control group
with its profile's memory, CPUs, process count and GPU devices
(:mod:`posehub.hub.isolation`; stopping one kills everything in its group).
Each cluster's folder (TLS certificate and key, logs) is the owner's alone
(0700, in ``<data_dir>/dask-clusters``); dashboards are off, since Dask's
dashboard has no login of its own. With ``isolation.mode: one-person-no-isolation``
everything runs as the gateway's own account, as ``UnsafeLocalBackend`` does. Plus:

* cluster options from the profiles of ``posehub.yaml`` (the worker profile
  sets the environment, cores, memory and GPUs of each worker);
* the limits of :func:`posehub.gateway.policy.max_workers` checked when a
  cluster starts (clusters, workers and GPUs per user, and the budget): a
  refused cluster gets the user's sentence as the error;
* a meter: every ``dask.meter_interval_seconds`` the running workers are
  reconciled with the cost ledger (a ``dask-worker`` span per worker, at its
  profile's price), so spend shows up in the cost reports and counts against
  the budget, and spans survive a gateway restart;
* GPUs: each worker of a GPU profile gets its own GPUs from the machine's pool,
  the one the hub gives servers theirs from (``<state_dir>/gpus.json``), in
  ``CUDA_VISIBLE_DEVICES``; a cluster is capped at the GPUs free when it starts
  and a worker gives its GPUs back when it stops (the meter also takes back
  those of workers the gateway no longer runs).

The rules shared with Kubernetes (profiles, limits, budget, the meter's ledger side) are
:class:`posehub.gateway.rules.PolicyMixin`'s; what is here is the one machine's: built
environments, the machine's GPUs, processes and their control groups.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from pathlib import Path

from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.backends.local import LocalBackend

from .. import environments, gpus
from ..hub import isolation
from ..hub.limits import Limits
from . import policy
from .rules import PolicyMixin

CHARGED = (JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.CLOSING)


def _no_dashboard(cmd: list[str]) -> list[str]:
    """Dask's dashboard has no login: anyone on the machine who finds its port could watch a cluster."""
    out, skip = [], False
    for arg in cmd:
        if skip:
            skip = False
        elif arg == "--dashboard-address":
            skip = True
        else:
            out.append(arg)
    return out + ["--no-dashboard"]


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc) if ms else None


class PoseHubLocalBackend(PolicyMixin, LocalBackend):
    async def setup(self, app):
        self.setup_policy()
        self.gpu_pool = gpus.shared_pool(self.posehub.state_dir, self.posehub["gpus"]["devices"])
        await super().setup(app)
        self.start_meter()

    async def cleanup(self):
        self.stop_meter()
        await super().cleanup()
        if hasattr(self, "gate"):
            await asyncio.to_thread(self.meter)

    # ------------------------------------------------------------ limits on this machine (PolicyMixin's rules)

    def _running(self, username: str) -> list[policy.Running]:
        return self.as_running(self.db.list_clusters(username=username))

    def check_startable(self, profile: dict) -> None:
        """Workers run in the image's environment on this machine: it must be built."""
        if not environments.is_built(profile["image"]):
            raise policy.Refused(f"The environment of image '{profile['image']}' (worker profile '{profile['slug']}') "
                                 f"is not built on this machine: ask the admin to run "
                                 f"`{environments.build_command(profile['image'])}`.")

    def gpu_room(self) -> dict:
        """GPU workers get GPUs of this machine's pool: a cluster is capped at those free now."""
        return {"free_gpus": len(self.gpu_pool.free()), "machine_gpus": len(self.gpu_pool.devices)}

    def cluster_config(self, profile: dict, workers: int, user, options) -> dict:
        return policy.cluster_config(self.posehub, profile, workers, config_path=str(self.posehub.path))

    def cluster_created(self, name: str, user) -> None:
        cluster = self.db.get_cluster(name)
        self.log.info("cluster %s of %s: %s, up to %s workers", name, user.name,
                      cluster.options.get("profile"), cluster.config.get("cluster_max_workers"))

    # ------------------------------------------------------------ processes: as the owner, in their control groups

    def account(self, username: str):
        return isolation.account(self.posehub, username) if self.posehub.isolated else None

    def setup_working_directory(self, cluster):
        """``<data_dir>/dask-clusters/<cluster>``: the owner's alone (0700), with the cluster's TLS certificate and
        key (0600) and the logs. (Dask Gateway's own version hands its files over by a loop that also passes
        single characters of a path to chown; this one names each file.)"""
        acct = self.account(cluster.username)
        workdir = Path(self.clusters_directory) / cluster.name
        certs, logs = Path(self.get_certs_directory(str(workdir))), Path(self.get_logs_directory(str(workdir)))
        for folder in (workdir, certs, logs):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_path, key_path = self._get_tls_paths(str(workdir))
        for path, data in ((cert_path, cluster.tls_cert), (key_path, cluster.tls_key)):
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as f:
                f.write(data)
        if acct is not None:
            for path in (workdir, certs, logs, Path(cert_path), Path(key_path)):
                os.chown(path, acct.uid, acct.gid, follow_symlinks=False)
        return str(workdir)

    def make_preexec_fn(self, cluster):
        """Used for processes started without a control group: those of isolation.mode one-person-no-isolation,
        which run as the gateway's own account (as Dask Gateway's UnsafeLocalBackend does)."""
        return isolation.preexec_fn(None, self.account(cluster.username), Path(cluster.state["workdir"]))

    def get_env(self, cluster):
        env = super().get_env(cluster)
        acct = self.account(cluster.username)
        if acct is not None:
            env["USER"] = acct.name
            env["HOME"] = str(acct.home)
        return env

    def get_scheduler_command(self, cluster):
        return _no_dashboard(super().get_scheduler_command(cluster))

    def get_worker_command(self, cluster, worker_name, scheduler_address=None):
        return _no_dashboard(super().get_worker_command(cluster, worker_name, scheduler_address))

    def _limits(self, cluster, gpus_held=None) -> Limits:
        """A worker's limits are its profile's; a scheduler gets the cluster's scheduler cores and memory."""
        if gpus_held is None:
            return Limits(memory_bytes=int(cluster.config.scheduler_memory), cpus=float(cluster.config.scheduler_cores),
                          tasks=self.posehub["isolation"]["max_processes"], gpus=())
        profile = self.posehub.profile(cluster.options.get("profile", ""))
        return isolation.profile_limits(self.posehub, profile, gpus_held)

    async def start_in_group(self, cluster, cmd, env, name: str, limits: Limits) -> tuple[int, dict]:
        """Start one process as the owner inside a new control group; returns (pid, the group's state)."""
        acct = self.account(cluster.username)
        if acct is None:
            return await super().start_process(cluster, cmd, env, name), {}
        sandbox = isolation.backend(self.posehub).create(isolation.unit_name("dask", cluster.name, name), limits)
        workdir = cluster.state["workdir"]
        log_path = os.path.join(self.get_logs_directory(workdir), name + ".log")
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, acct.uid, acct.gid)
            proc = await asyncio.create_subprocess_exec(
                *sandbox.wrap(cmd, acct.uid, acct.gid), preexec_fn=isolation.preexec_fn(sandbox, acct, Path(workdir)),
                start_new_session=True, env=env, stdout=fd, stderr=asyncio.subprocess.STDOUT)
        except BaseException:
            await asyncio.to_thread(sandbox.remove)
            raise
        finally:
            os.close(fd)
        return proc.pid, sandbox.state()

    async def stop_in_group(self, state: dict) -> None:
        """Stop a process as Dask Gateway does (SIGINT, SIGTERM, SIGKILL), then kill whatever else is in its group."""
        pid = state.get("pid")
        if pid is not None:
            await self.stop_process(pid)
        if state.get("sandbox"):
            sandbox = isolation.backend(self.posehub).restore(state["sandbox"])
            await asyncio.to_thread(sandbox.remove)

    async def do_start_cluster(self, cluster):
        workdir = self.setup_working_directory(cluster)
        yield {"workdir": workdir}
        pid, group = await self.start_in_group(cluster, self.get_scheduler_command(cluster),
                                               self.get_scheduler_env(cluster), "scheduler", self._limits(cluster))
        yield {"workdir": workdir, "pid": pid, "sandbox": group}

    async def do_stop_cluster(self, cluster):
        await self.stop_in_group(cluster.state)
        workdir = cluster.state.get("workdir")
        if workdir is not None:
            self.cleanup_working_directory(workdir)
        self.gpu_pool.release_matching(policy.gpu_owner(cluster.name, ""))

    # ------------------------------------------------------------ workers and their GPUs

    def _worker_gpus(self, cluster) -> int:
        profile = self.posehub.profile(cluster.options.get("profile", ""))
        return int(profile.get("gpus") or 0) if profile else 0

    async def do_start_worker(self, worker):
        env = self.get_worker_env(worker.cluster)
        owner = policy.gpu_owner(worker.cluster.name, worker.name)
        held, count = [], self._worker_gpus(worker.cluster)
        if count:
            try:
                held = self.gpu_pool.acquire(owner, count)
            except gpus.NoFreeGpu as e:
                raise RuntimeError(f"worker {worker.name} of cluster {worker.cluster.name} not started: {e}") from None
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in held)
        try:
            pid, group = await self.start_in_group(worker.cluster, self.get_worker_command(worker.cluster, worker.name),
                                                   env, f"worker-{worker.name}", self._limits(worker.cluster, held))
        except BaseException:
            self.gpu_pool.release(owner)
            raise
        yield {"pid": pid, "gpus": held, "sandbox": group}

    async def do_stop_worker(self, worker):
        await self.stop_in_group(worker.state)
        self.gpu_pool.release(policy.gpu_owner(worker.cluster.name, worker.name))

    def release_lost_gpus(self) -> list[str]:
        """Give back the GPUs of workers the gateway no longer runs (stopped while it was down, or lost)."""
        keep = {policy.gpu_owner(c.name, w.name) for c in list(self.db.name_to_cluster.values())
                for w in list(c.workers.values()) if w.target < JobStatus.STOPPED or w.status < JobStatus.STOPPED}
        gone = self.gpu_pool.release_matching(policy.GPU_OWNER, keep)
        for owner in gone:
            self.log.info("GPUs of %s given back (the worker is gone)", owner)
        return gone

    # ------------------------------------------------------------ metering

    def workers(self) -> tuple[dict, dict]:
        """({user: {resource: RunningServer}}, {user: {resource: stop time}}) from the gateway's records."""
        running: dict = {}
        stopped: dict = {}
        for cluster in list(self.db.name_to_cluster.values()):
            slug = cluster.options.get("profile", "")
            for w in list(cluster.workers.values()):
                rid = policy.worker_resource_id(cluster.name, w.name)
                charged = self.running_worker(slug, _time(w.start_time))
                if w.status in CHARGED and w.target < JobStatus.STOPPED and charged is not None:
                    running.setdefault(cluster.username, {})[rid] = charged
                elif w.stop_time:
                    stopped.setdefault(cluster.username, {})[rid] = _time(w.stop_time)
        return running, stopped

    def meter(self):
        return self.reconcile_workers(*self.workers())

    async def meter_round(self) -> None:
        await asyncio.to_thread(self.meter)
        if self.gpu_pool.devices:
            await asyncio.to_thread(self.release_lost_gpus)
