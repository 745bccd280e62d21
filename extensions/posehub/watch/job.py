"""One video found by a watch, analysed: run as the watch's owner, in the pose image's environment.

The watch service starts ``python -m posehub.watch.job`` as the owner's system account (so the owner's
file permissions apply to the model, the video and the results) and writes the job's settings on its
standard input, secrets included (the owner's short-lived hub token for Dask Gateway and, for S3, the
owner's short-lived S3 credentials): they never appear in an environment or a file. The job

1. fetches the video (S3: into ``~/.posehub/watch/<watch>/<item>/``; local buckets: read in place),
2. checks the model and the video (:func:`posehub.analyze.plan.make_plan`) before any cluster exists, so
   bad input is never charged,
3. stops clusters an earlier attempt left (a restart killed it), starts a Dask Gateway cluster of the
   watch's worker profile as the owner (metered, budget-checked and capped like any of the owner's
   clusters) and says its name at once (``CLUSTER <name>``), analyses the video (:mod:`posehub.analyze`),
   shuts the cluster down,
4. puts the results under the watch's output prefix and prints one line ``RESULT {json}``: ``state``
   (done, failed: bad input or a failed analysis, refused: the gateway would not start a cluster),
   ``error``, and for a done one the files, frames, mean confidence and share of low-confidence frames.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path


CLUSTER = "CLUSTER "


def _result(state: str, error: str = "", **kw) -> dict:
    return {"state": state, "error": error, **kw}


def _s3(spec: dict, where: dict):
    import boto3

    c = spec["credentials"]
    return boto3.session.Session(aws_access_key_id=c["access_key_id"], aws_secret_access_key=c["secret_access_key"],
                                 aws_session_token=c.get("session_token") or None,
                                 region_name=where.get("region") or None).client(
        "s3", endpoint_url=where.get("endpoint_url") or None)


def fetch(spec: dict, work: Path) -> Path:
    src = spec["source"]
    if "path" in src:
        return Path(src["path"])
    s3 = src["s3"]
    target = work / Path(s3["key"]).name
    _s3(spec, s3).download_file(s3["bucket"], s3["key"], str(target))
    return target


def deliver(spec: dict, files: dict, out_dir: Path) -> dict:
    """The results where the watch puts them: a local folder already (written there), or uploaded."""
    out = spec["out"]
    if "path" in out:
        return files
    s3 = out["s3"]
    client = _s3(spec, s3)
    placed = {}
    for kind, path in files.items():
        key = s3["prefix"] + Path(path).name
        client.upload_file(str(path), s3["bucket"], key)
        placed[kind] = f"s3://{s3['bucket']}/{key}"
    return placed


def run(spec: dict) -> dict:
    from posehub.analyze.handle import Analysis
    from posehub.analyze.plan import AnalyzeError, make_plan

    work = Path.home() / ".posehub" / "watch" / str(spec["watch"]) / str(spec["item"])
    work.mkdir(parents=True, exist_ok=True)
    for p in (work.parent.parent, work.parent, work):
        p.chmod(0o700)
    try:
        video = fetch(spec, work)
    except Exception as e:  # noqa: BLE001 - any failure to fetch is this video's error
        return _result("failed", f"the video {spec['key']} could not be fetched: {e}")
    out_dir = Path(spec["out"]["path"]) if "path" in spec["out"] else work / "out"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _result("failed", f"the results folder cannot be made: {e.strerror}")
    try:
        plan = make_plan(spec["model"], [str(video)], out=str(out_dir), chunk_frames=spec["chunk_frames"],
                         batch=spec["batch"], overwrite=True)
    except AnalyzeError as e:  # said of the key the user knows, not of where this machine keeps it
        return _result("failed", str(e).replace(str(video), spec["key"]))
    except PermissionError as e:
        return _result("failed", f"permission denied: {e.filename}")

    from dask_gateway import Gateway
    from dask_gateway.client import GatewayClusterError

    t0 = time.time()
    gateway = Gateway()
    for name in spec.get("stale_clusters") or []:  # started by an attempt that died (a restart): stop them
        try:
            gateway.stop_cluster(name)
        except Exception:  # noqa: BLE001 - already gone
            pass
    try:
        name = gateway.submit(profile=spec["profile"])
    except (ValueError, GatewayClusterError) as e:  # the gateway's refusal (budget, GPUs, clusters): a sentence
        return _result("refused", str(e))
    except Exception as e:  # noqa: BLE001 - not reached (a restart): this attempt counts, the next one may work
        return _result("failed", f"Dask Gateway could not be reached: {e}", retry=True)
    print(f"{CLUSTER}{name}", flush=True)  # recorded by the service at once
    try:
        cluster = gateway.connect(name, shutdown_on_close=True)
    except Exception as e:  # noqa: BLE001 - the gateway went away (a restart): stop it, try again later
        try:
            gateway.stop_cluster(name)
        except Exception:  # noqa: BLE001 - the next attempt stops it (stale_clusters)
            pass
        return _result("failed", f"the Dask cluster could not be reached: {e}", retry=True)
    try:
        cluster.scale(spec["workers"])
        client = cluster.get_client()
        job = Analysis(plan, client)._start()
        job.wait()
        (r,) = job.results()
        if r.status != "done":
            return _result("failed", (r.error or f"the analysis ended {r.status}").replace(str(video), spec["key"]))
        files = deliver(spec, r.files, out_dir)
        return _result("done", frames=r.frames, mean_confidence=r.mean_confidence,
                       low_confidence_share=r.low_confidence_share, files=files, workers=r.workers,
                       seconds=round(time.time() - t0, 1), analysis=plan.id)
    finally:
        cluster.shutdown()
        if "s3" in spec["source"]:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    spec = json.loads(sys.stdin.read())
    os.environ.update(spec.get("env") or {})
    os.environ["JUPYTERHUB_API_TOKEN"] = spec["token"]

    def stop(signum, _frame):
        raise SystemExit(128 + signum)  # the cluster is shut down on the way out

    signal.signal(signal.SIGTERM, stop)
    try:
        result = run(spec)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - reported to the service, which records it
        result = _result("failed", f"{type(e).__name__}: {e}")
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
