"""Ensembles on a real local Dask cluster, run in the pose image's environment by test_dask.py.

    .envs/pose/bin/python tests/ensemble/scenarios.py {e2e,cancel,failures} OUT_DIR DATA_DIR

Each scenario starts ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
resources={"member": 1})``, trains a tiny SLEAP ensemble on 20 open-field frames and prints one JSON
line with what the test checks.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # two workers on two cores

TINY = {"epochs": 1, "scale": 0.25, "filters": 4, "max_stride": 8, "batch_size": 4, "augment": False}


def wait_for(cond, timeout: float, what: str, ens=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    tail = "\n".join(ens.log_tail(40)) if ens is not None else ""
    raise TimeoutError(f"{what} within {timeout} s; progress: {ens.progress if ens else ''}\n{tail}")


def alive(pid: int | None) -> bool:
    import psutil

    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def training(ens, member: int, min_epoch: int = 0):
    p = ens.progress[member]
    return p["state"] == "running" and p["phase"] == "training" and p["pid"] and p["epoch"] >= min_epoch


def main(mode: str, out: Path, data: Path) -> dict:
    from distributed import Client, LocalCluster

    from posehub.ensemble import train_ensemble
    from posehub.pose import load_labels

    labels = load_labels(str(data / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv")).subset(range(0, 116, 6))
    video = str(sorted((data / "videos").glob("*.mp4"))[0])
    t0 = time.monotonic()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={"member": 1},
                      dashboard_address=None, silence_logs=50) as cluster, Client(cluster) as client:
        started = time.monotonic() - t0
        seen: list[tuple[int, str, int]] = []

        def watch(e):
            for p in e.progress:
                if not seen or (p["member"], p["state"], p["attempt"]) not in seen:
                    seen.append((p["member"], p["state"], p["attempt"]))

        result: dict = {"cluster_s": round(started, 1)}
        if mode == "e2e":
            ens = train_ensemble(labels, "sleap", members=3, config=TINY, seeds=[0, 1, 2], client=client,
                                 video=video, video_frames=2, dest=str(out / "ens"), name="e2e")
            ens.on_update(watch)
            assert ens.wait(240), f"not done in 240 s: {ens.progress}\n" + "\n".join(ens.log_tail(40))
            r = ens.results()
            result.update(table=json.loads(r.table().to_json(orient="index")), label_next=r.label_next,
                          method=r.method, video_frames=r.video_frames, files=r.files,
                          progress=ens.progress, logs=len(ens.log_tail(10000)), resources=ens.resources,
                          consensus_test_rows=int(r.test.points.shape[0]), test_frames=list(r.split.test))
        elif mode == "cancel":
            ens = train_ensemble(labels, "sleap", members=3, config={**TINY, "epochs": 500}, client=client,
                                 dest=str(out / "ens"), name="cancel")
            ens.on_update(watch)
            wait_for(lambda: training(ens, 0, 1) and training(ens, 1, 1), 180, "two members training", ens)
            pids = [p["pid"] for p in ens.progress if p["pid"]]
            t = time.monotonic()
            confirmed = ens.cancel(timeout=30)
            result["cancel_s"] = round(time.monotonic() - t, 2)
            gone = wait_for(lambda: not any(alive(p) for p in pids), 10, "training processes gone") and True
            result.update(confirmed=confirmed, pids=pids, gone=gone, alive_after=[alive(p) for p in pids],
                          done=ens.wait(60), progress=ens.progress,
                          table=json.loads(ens.results().table().to_json(orient="index")))
            # the workers are free again: a plain task runs at once
            t = time.monotonic()
            result["free_after"] = client.submit(sum, [1, 2], resources={"member": 1}).result(timeout=30) == 3
            result["free_s"] = round(time.monotonic() - t, 2)
        elif mode == "failures":
            # member 0's worker is killed while it trains; member 2 cannot write its model (its folder is a file)
            (out / "ens").mkdir(parents=True)
            (out / "ens" / "member-2").write_text("in the way")
            ens = train_ensemble(labels, "sleap", members=3, config={**TINY, "epochs": 8}, client=client,
                                 dest=str(out / "ens"), name="failures", retries=1)
            ens.on_update(watch)
            wait_for(lambda: training(ens, 0, 1), 180, "member 0 training", ens)
            p0 = ens.progress[0]
            worker_pids = client.run(os.getpid)
            os.kill(worker_pids[p0["worker"]], signal.SIGKILL)
            result["child_gone"] = bool(wait_for(lambda: not alive(p0["pid"]), 10, "the killed worker's training"))
            assert ens.wait(300), f"not done in 300 s: {ens.progress}\n" + "\n".join(ens.log_tail(40))
            r = ens.results()
            result.update(killed_worker=p0["worker"], progress=ens.progress, members_ok=len(r.succeeded),
                          table=json.loads(r.table().to_json(orient="index")), label_next=r.label_next,
                          errors=[m.error for m in r.members])
        result["seen"] = seen
        result["total_s"] = round(time.monotonic() - t0, 1)
        return result


if __name__ == "__main__":
    mode, out, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps(main(mode, out, data), default=str))
