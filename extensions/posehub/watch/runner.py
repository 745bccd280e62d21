"""Start one found video's job as the watch's owner, and read what it says (one machine).

The job (:mod:`posehub.watch.job`) runs in the watch profile's environment as the owner's system
account (``isolation.mode: accounts``; the service's own account in one-person mode), in a session of
its own so that stopping it stops what it started. Its secrets go on its standard input: a hub token of
the owner's made for this job only (scope: reach Dask Gateway; deleted when the job ends, and expiring
anyway) and, for S3 buckets, the owner's short-lived S3 credentials (the same session policy their
workspace gets).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
import os
import signal
from pathlib import Path

from .. import environments
from ..config import PoseHubConfig
from ..gateway import settings as gateway_settings
from ..gateway.policy import SERVICE as DASK_SERVICE
from ..hub import isolation, s3creds
from . import policy, sources
from .store import ItemRecord, WatchRecord

log = logging.getLogger("posehub.watch")
RESULT = "RESULT "
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _preexec(acct, home: Path):
    """Become the owner (:func:`posehub.hub.isolation.preexec_fn`), then ask for SIGTERM when the service
    dies (set after the change of user, which clears it): a job never outlives the service that records
    its result, so a restarted service that runs the video again is the only one running it."""
    become = isolation.preexec_fn(None, acct, home)

    def preexec():
        become()
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


def job_spec(cfg: PoseHubConfig, watch: WatchRecord, item: ItemRecord, groups, home: Path) -> dict:
    """Everything the job needs but its token and credentials."""
    w = cfg["watch"]
    src = sources.access(cfg, watch.owner, groups, watch.bucket)
    dst = sources.access(cfg, watch.owner, groups, watch.out_bucket)
    out_prefix = policy.output_prefix(watch.out_prefix, item.key, watch.prefix)
    spec = {"watch": watch.id, "item": item.id, "key": item.key, "model": str(home / watch.model),
            "profile": watch.profile, "workers": w["workers"], "chunk_frames": w["chunk_frames"],
            "batch": w["batch"], "env": gateway_settings.client_env(cfg)}
    if cfg["buckets"]["backend"] == "local":
        spec["source"] = {"path": str(sources.local_folder(cfg, watch.owner, groups, watch.bucket) / item.key)}
        spec["out"] = {"path": str(sources.local_folder(cfg, watch.owner, groups, watch.out_bucket) / out_prefix)}
    else:
        spec["source"] = {"s3": {"bucket": src.bucket, "key": src.prefix + item.key,
                                 "endpoint_url": src.endpoint_url, "region": src.region}}
        spec["out"] = {"s3": {"bucket": dst.bucket, "prefix": dst.prefix + out_prefix,
                              "endpoint_url": dst.endpoint_url, "region": dst.region}}
    return spec


def credentials(cfg: PoseHubConfig, watch: WatchRecord, groups) -> dict:
    """The owner's S3 credentials for the watched and the results bucket (one STS call)."""
    accs = {a.name: a for a in (sources.access(cfg, watch.owner, groups, n) for n in {watch.bucket, watch.out_bucket})}
    creds = s3creds.credentials_for(cfg, watch.owner, list(accs.values()))
    for name, c in creds.items():
        if isinstance(c, s3creds.CredentialsError):
            raise sources.SourceError(str(c))
    c = creds[watch.bucket]
    return {"access_key_id": c.access_key_id, "secret_access_key": c.secret_access_key,
            "session_token": c.session_token}


def python_of(cfg: PoseHubConfig, profile: str) -> str:
    image = cfg.profile(profile)["image"]
    return str(environments.env_dir(image) / "bin" / "python")


async def run_job(cfg: PoseHubConfig, spec: dict, python: str, owner: str, timeout: float,
                  on_cluster=lambda name: None) -> dict:
    """Run the job as ``owner`` with ``spec`` on its standard input; its RESULT, or a failed one saying why.
    ``on_cluster(name)`` is called as soon as the job says which Dask cluster it started."""
    from .job import CLUSTER

    acct = isolation.account(cfg, owner) if cfg.isolated else None
    home = isolation.home_of(cfg, owner)
    env = {"HOME": str(home), "USER": acct.name if acct else os.environ.get("USER", ""), "LANG": "C.UTF-8",
           "PATH": f"{Path(python).parent}{os.pathsep}{os.defpath}", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = await asyncio.create_subprocess_exec(
        python, "-m", "posehub.watch.job", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True, limit=1 << 20,
        preexec_fn=_preexec(acct, home))
    proc.stdin.write(json.dumps(spec).encode())
    await proc.stdin.drain()
    proc.stdin.close()
    result: list[dict] = []
    err_tail: list[str] = []

    async def read_out():
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(CLUSTER):
                on_cluster(line[len(CLUSTER):].strip())
            elif line.startswith(RESULT):
                result.append(json.loads(line[len(RESULT):]))

    async def read_err():
        async for raw in proc.stderr:
            err_tail.append(raw.decode(errors="replace").rstrip())
            del err_tail[:-20]

    try:
        await asyncio.wait_for(asyncio.gather(read_out(), read_err(), proc.wait()), timeout)
    except asyncio.TimeoutError:
        _stop(proc.pid)
        await proc.wait()
        return {"state": "failed", "error": f"the analysis took longer than {timeout:.0f} s (watch.job_timeout_seconds)"}
    except asyncio.CancelledError:
        _stop(proc.pid)
        raise
    if not result:
        log.warning("watch job %s/%s of %s ended %s without a result: %s", spec["watch"], spec["item"], owner,
                    proc.returncode, " | ".join(err_tail[-3:]))
        return {"state": "failed", "retry": True,
                "error": f"the analysis process ended ({proc.returncode}) without a result: "
                         + (err_tail[-1] if err_tail else "no output")}
    return result[-1]


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def token_scopes() -> list[str]:
    return [f"access:services!service={DASK_SERVICE}"]
