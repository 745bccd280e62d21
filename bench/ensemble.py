#!/usr/bin/env python3
"""Ensemble scaling: wall time of 1 member alone vs N members on N workers, for N = 1, 2, 4.

For each N (capped by the free CPU cores, or by the GPUs), in the same run:

  t1: a 1-member ensemble (``posehub.ensemble.train_ensemble``) on a 1-worker Dask cluster;
  tN: an N-member ensemble (same per-member settings, seeds 0..N-1) on an N-worker cluster.

Efficiency = t1 / tN (ideal 1.0); target >= 0.85 on a machine with N free cores or GPUs. Each
cluster is started (and its workers warmed up) before the clock starts, so a time runs from the
``train_ensemble`` call to ``wait()`` returning: scheduling, each member's own process (Python and
framework imports), training, evaluation and prediction, copying the model, consensus and writing
the ensemble's files. The members' own figures (when each started, its training time) show the
fixed overhead beside the training. t1 is measured once per round (first in odd rounds, last in
even ones) and shared by every N; the row N=1 compares two 1-member runs: the noise of the
measurement (flagged NOISY beyond 10%).

Workers: ``distributed.SpecCluster`` of ``distributed.Nanny`` processes, 1 Dask thread each.
  CPU: ``resources={"member": 1}``, GPUs hidden, ``OMP_NUM_THREADS`` (and MKL/OpenBLAS) = the
       cores each member has (``--threads-per-member``, default 1), so N members do not
       oversubscribe the cores; N <= free cores / threads per member.
  GPU: one worker per GPU, ``resources={"GPU": 1}``, ``CUDA_VISIBLE_DEVICES`` = its GPU, CPU
       threads = free cores / largest N.
The member's training process inherits its worker's environment (posehub.ensemble.task.child_env).

Settings (open-field, DeepLabCut's example: 116 labelled frames, 80/20 split, no video):
  default (for a GPU): all 116 frames; sleap = Trainer.full with 20 epochs (of 200 steps, batch 4,
           scale 1.0, 32 filters); dlc = Trainer.full with 30 epochs (resnet_50, crop 448, batch 8).
  --quick (a few minutes on a 2-core CPU for N=1,2): 30 frames; sleap 2 epochs at scale 0.25,
           8 filters, max stride 8, no augmentation; dlc 1 epoch, crop 128, batch 4.
  --frames, --epochs override either.

Run it in the pose image's environment:

    .envs/pose/bin/python bench/ensemble.py --quick --n 1 2        # CPU, tiny settings
    .envs/pose/bin/python bench/ensemble.py [--framework dlc] [--n 1 2 4] [--repeats 3] [--json out.json]
    .envs/pose/bin/python bench/ensemble.py --device cpu ...        # on a GPU machine: the CPU as well

Prints a table and a final line ``RESULT {...}`` (JSON) with every figure.
Exit status: 0 when every measured N > 1 meets the target (always 0 with --quick, unless a run
failed), 1 when not, 2 when a run failed, 3 when the data is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "extensions"))
# the Dask workers (spawned) and the members' processes find posehub the same way
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "extensions")]
                                           + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

DATA = REPO.parent / "shared" / "data" / "openfield"
TARGET = 0.85
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
QUICK = {"sleap": {"epochs": 2, "scale": 0.25, "filters": 8, "max_stride": 8, "batch_size": 4, "augment": False},
         "dlc": {"epochs": 1, "crop": 128, "batch_size": 4}}
QUICK_FRAMES = 30
MODERATE_EPOCHS = {"sleap": 20, "dlc": 30}
IMPORTS = {"sleap": "import torch, lightning, sleap_io, sleap_nn.train",
           "dlc": "import os; os.environ.setdefault('DLClight', 'True'); import torch, deeplabcut"}


def labels_file(data: Path) -> Path | None:
    found = sorted(data.glob("labeled-data/*/CollectedData_*.csv"))
    return found[0] if found else None


def gpus() -> list[tuple[str, str]]:
    """(CUDA index as the workers should see it, name) of the visible GPUs; nvidia-smi first (it does
    not start CUDA in this process), torch otherwise."""
    names: list[str] = []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
        if out.returncode == 0:
            names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    if not names:
        try:
            import torch

            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001 - no torch or no CUDA: a CPU machine
            names = []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        if not ids:
            return []
        if len(names) == len(ids) or not names:  # torch saw the visible ones only
            return list(zip(ids, names or ["GPU"] * len(ids)))
        return [(d, names[int(d)] if d.isdigit() and int(d) < len(names) else "GPU") for d in ids]
    return [(str(i), n) for i, n in enumerate(names)]


def cluster(n: int, gpu_ids: list[str] | None, threads: int, local_dir: Path):
    """A SpecCluster of ``n`` Nanny workers, 1 Dask thread each; per worker its GPU and thread limits."""
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {}
    for i in range(n):
        env = {v: str(threads) for v in THREAD_VARS}
        if gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu_ids[i]
            resources = {"GPU": 1}
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""  # CPU members, even on a GPU machine
            resources = {"member": 1}
        workers[f"w{i}"] = {"cls": Nanny, "options": {
            "nthreads": 1, "resources": resources, "env": env, "memory_limit": 0, "host": "127.0.0.1",
            "local_directory": str(local_dir), "silence_logs": logging.ERROR}}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR, name=f"bench-{n}")


def _warm_worker():
    import posehub.ensemble.task  # noqa: F401 - what unpickling a member's task imports

    return os.environ.get("OMP_NUM_THREADS"), os.environ.get("CUDA_VISIBLE_DEVICES")


class Timeline:
    """First time (seconds after the submit) each member is seen in each state, from ``on_update``."""

    def __init__(self, t0: float, members: int):
        self.t0 = t0
        self.lock = threading.Lock()
        self.seen: list[dict[str, float]] = [{} for _ in range(members)]

    def __call__(self, ens) -> None:
        now = time.perf_counter() - self.t0
        with self.lock:
            for p in ens.progress:
                s = self.seen[p["member"]]
                marks = [f"state:{p['state']}"]
                if p["state"] == "running" and p["phase"]:
                    marks.append(f"phase:{p['phase']}")
                if p["state"] == "running" and p["epoch"] >= 1:  # its phase may already be "evaluating"
                    marks.append("epoch1")
                for m in marks:
                    s.setdefault(m, round(now, 2))


def one_run(client, labels, framework: str, members: int, params: dict, dest: Path, timeout: float,
            video: str | None, video_frames: int) -> dict:
    """Time one ensemble of ``members`` members on ``client``'s cluster."""
    from posehub.ensemble import train_ensemble

    t0 = time.perf_counter()
    timeline = Timeline(t0, members)
    ens = train_ensemble(labels, framework, members=members, config=params, seeds=list(range(members)),
                         client=client, dest=str(dest), name=dest.name, retries=0,
                         video=video, video_frames=video_frames if video else None)
    submitted = time.perf_counter() - t0
    ens.on_update(timeline)
    for i, f in enumerate(ens.futures):  # when the client learns a member's task ended
        f.add_done_callback(lambda _f, i=i: timeline.seen[i].setdefault("future", round(time.perf_counter() - t0, 2)))
    finished = ens.wait(timeout)
    wall = time.perf_counter() - t0
    if not finished:
        tail = "\n".join(ens.log_tail(30))
        ens.cancel(timeout=30)
        return {"ok": False, "wall_s": round(wall, 2), "error": f"not done within {timeout:.0f} s\n{tail}",
                "progress": ens.progress}
    r = ens.results()
    timeline(ens)
    out = {"ok": all(m.status == "done" for m in r.members), "wall_s": round(wall, 2),
           "submit_s": round(submitted, 2), "resources": ens.resources, "members": []}
    for m, seen in zip(r.members, timeline.seen):
        start = seen.get("state:running")
        done = seen.get("future")
        out["members"].append({
            "member": m.index, "seed": m.seed, "status": m.status, "worker": m.worker,
            "start_s": start,  # submit -> its task started on a worker
            "first_epoch_s": seen.get("epoch1"),  # submit -> its first epoch ended (process + imports + epoch 1)
            "trained_s": seen.get("phase:predicting"),  # submit -> trained and evaluated
            "process_done_s": seen.get("phase:done"),  # submit -> its process said it was done
            "done_s": done,  # submit -> the client learns its task ended (process gone, predictions loaded)
            "task_s": round(done - start, 2) if start is not None and done is not None else None,
            "train_s": m.train_s,  # train_and_evaluate's training, framework import and data preparation included
            "test_mean_px": None if m.mean_px != m.mean_px else round(m.mean_px, 2),
            "error": m.error.splitlines()[0] if m.error else ""})
        if m.status != "done":
            out["error"] = f"member {m.index}: {m.status}: {m.error}"
    dones = [m["done_s"] for m in out["members"] if m["done_s"] is not None]
    out["results_s"] = round(max(0.0, wall - max(dones)), 2) if dones else None  # last task ended -> wait() returned
    said = [m["process_done_s"] for m in out["members"] if m["process_done_s"] is not None]
    out["end_s"] = round(max(0.0, wall - max(said)), 2) if said else None  # last process said done -> wait() returned
    ends = [(m["process_done_s"], m["done_s"]) for m in out["members"]
            if m["process_done_s"] is not None and m["done_s"] is not None]
    out["process_exit_s"] = round(max(b - a for a, b in ends), 2) if ends else None  # process done -> task ended
    c = r.consensus_metrics.get("all", {}).get("mean_px")
    out["consensus_mean_px"] = round(c, 2) if c is not None and c == c else None  # NaN: none
    return out


def measure(n: int, labels, args, params, gpu_ids, threads, work: Path, tag: str) -> dict:
    """Start an n-worker cluster, warm it up, time an n-member ensemble on it, stop it."""
    from distributed import Client

    t = time.perf_counter()
    local = work / "dask" / tag
    local.mkdir(parents=True, exist_ok=True)
    with cluster(n, gpu_ids[:n] if gpu_ids is not None else None, threads, local) as c, Client(c) as client:
        client.wait_for_workers(n, timeout=120)
        envs = client.run(_warm_worker)
        start_s = time.perf_counter() - t
        r = one_run(client, labels, args.framework, n, params, work / "runs" / tag, args.timeout,
                    args.video, args.video_frames)
    r.update(workers=n, cluster_start_s=round(start_s, 2),
             worker_env={w: {"OMP_NUM_THREADS": e[0], "CUDA_VISIBLE_DEVICES": e[1]} for w, e in envs.items()})
    mem = r.get("members", [])
    train = [m["train_s"] for m in mem if m.get("train_s") is not None]
    first = [m["first_epoch_s"] for m in mem if m.get("first_epoch_s") is not None]
    starts = [m["start_s"] for m in mem if m.get("start_s") is not None]
    print(f"  {tag}: {n} member(s) on {n} worker(s): {r['wall_s']:.1f} s"
          + (f"; members started at {_span(starts)} s, first epoch done at {_span(first)} s, "
             f"train {_span(train)} s; a process said done -> its task ended {r.get('process_exit_s')} s, last task "
             f"ended -> wait() returned {r.get('results_s')} s" if mem else "")
          + ("" if r["ok"] else f"  FAILED: {r.get('error', '')[:500]}"), flush=True)
    return r


def _span(xs) -> str:
    if not xs:
        return "?"
    lo, hi = min(xs), max(xs)
    return f"{lo:.1f}" if abs(hi - lo) < 0.05 else f"{lo:.1f}-{hi:.1f}"


def _median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 2) if xs else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", default="sleap", choices=["sleap", "dlc"])
    ap.add_argument("--n", nargs="+", type=int, default=[1, 2, 4], help="ensemble sizes (default 1 2 4)")
    ap.add_argument("--repeats", type=int, default=1, help="rounds; each figure is the median (default 1)")
    ap.add_argument("--quick", action="store_true", help="tiny settings (30 frames, 1-2 epochs, small input)")
    ap.add_argument("--frames", type=int, default=None,
                    help=f"labelled frames used, evenly spaced (default all; --quick {QUICK_FRAMES})")
    ap.add_argument("--epochs", type=int, default=None, help="override the epochs")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                    help="auto: the GPUs when there are any, else the CPU")
    ap.add_argument("--threads-per-member", type=int, default=None,
                    help="CPU threads each member's training gets (default: 1 on CPU; free cores / largest N on GPU)")
    ap.add_argument("--video-frames", type=int, default=0,
                    help="also predict this many frames of the project's video (default 0: none)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds one ensemble may take (default 3600; --quick 900)")
    ap.add_argument("--data", default=str(DATA),
                    help="DeepLabCut's open-field project (default ../shared/data/openfield)")
    ap.add_argument("--workdir", default=None, help="where runs go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the runs (models, ensemble files)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.repeats < 1 or any(n < 1 for n in args.n):
        ap.error("--repeats and --n must be >= 1")
    args.timeout = args.timeout or (900 if args.quick else 3600)

    data = Path(args.data)
    csv = labels_file(data)
    if csv is None:
        print(f"open-field data not found: no labeled-data/*/CollectedData_*.csv under {data}. Put DeepLabCut's "
              "open-field example there (or pass --data); nothing was measured.", file=sys.stderr)
        return 3
    videos = sorted(data.glob("videos/*.mp4"))
    args.video = str(videos[0]) if args.video_frames and videos else None
    if args.video_frames and not videos:
        print(f"no video under {data / 'videos'}: no video frames predicted", flush=True)

    from posehub.pose import load_labels, trainers

    labels = load_labels(str(csv))
    frames = args.frames or (QUICK_FRAMES if args.quick else len(labels))
    if not 5 <= frames <= len(labels):
        ap.error(f"--frames must be in 5..{len(labels)}")
    if frames < len(labels):
        import numpy as np

        labels = labels.subset(sorted({int(i) for i in np.linspace(0, len(labels) - 1, frames).round()}))
    trainer = trainers.get(args.framework)()
    params = dict(QUICK[args.framework]) if args.quick else {**trainer.full, "epochs": MODERATE_EPOCHS[args.framework]}
    if args.epochs:
        params["epochs"] = args.epochs

    # the machine: CPU cores or GPUs, and which N fit
    cores = len(os.sched_getaffinity(0))
    found = gpus() if args.device in ("auto", "gpu") else []
    if args.device == "gpu" and not found:
        print("--device gpu: no GPU found (nvidia-smi, torch)", file=sys.stderr)
        return 2
    use_gpu = bool(found)
    wanted = sorted(set(args.n))
    if use_gpu:
        kept = [n for n in wanted if n <= len(found)]
        skipped = {n: f"only {len(found)} GPU(s)" for n in wanted if n > len(found)}
        threads = args.threads_per_member or max(1, cores // max(kept or [1]))
        params["device"] = "cuda"
        what = f"{len(found)} GPU(s): " + ", ".join(f"{i}: {n}" for i, n in found)
    else:
        threads = args.threads_per_member or 1
        fit = max(1, cores // threads)
        kept = [n for n in wanted if n <= fit]
        skipped = {n: f"only {cores} free core(s) (sched_getaffinity) at {threads} thread(s) per member"
                   for n in wanted if n > fit}
        params["device"] = "cpu"
        what = f"CPU: {cores} free core(s) of {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}"
    params = trainer.params(params)  # every parameter, checked
    gpu_ids = [i for i, _ in found] if use_gpu else None

    print(f"ensemble scaling, {args.framework}: {what}; {threads} CPU thread(s) per member", flush=True)
    print(f"open-field: {len(labels)} frames ({csv.parent.name}), 80/20 split; "
          f"{'--quick' if args.quick else 'moderate'} settings: {params}", flush=True)
    for n, why in skipped.items():
        print(f"N={n} skipped: {why}", flush=True)
    if not kept:
        print("no N fits this machine; nothing measured", file=sys.stderr)
        return 2

    # a cold disk cache would make the first (1-member) run slower than the rest
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS[args.framework]], env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                   capture_output=True)
    print(f"warm-up: imported {args.framework}'s libraries once in {time.perf_counter() - t:.1f} s (not timed)",
          flush=True)

    logging.getLogger("distributed").setLevel(logging.ERROR)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="posehub-bench-ensemble-"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[int, list[dict]] = {n: [] for n in kept}
    singles: list[dict] = []
    failed = False
    t_all = time.perf_counter()
    try:
        for rnd in range(args.repeats):
            # t1 first in even rounds, last in odd ones: a drift of the machine does not favour one side
            order = [0] + kept if rnd % 2 == 0 else kept + [0]
            print(f"\n== round {rnd + 1}/{args.repeats}", flush=True)
            for n in order:
                r = measure(max(n, 1), labels, args, params, gpu_ids, threads, work,
                            f"r{rnd}-t1" if n == 0 else f"r{rnd}-n{n}")
                (singles if n == 0 else runs[n]).append(r)
                failed |= not r["ok"]
    finally:
        if args.keep:
            print(f"\nruns kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    t1_list = [r["wall_s"] for r in singles if r["ok"]]
    t1 = _median(t1_list)
    train1 = _median([m["train_s"] for r in singles if r["ok"] for m in r["members"]])
    rows = []
    for n in kept:
        ok = [r for r in runs[n] if r["ok"]]
        tn = _median([r["wall_s"] for r in ok])
        trainn = _median([m["train_s"] for r in ok for m in r["members"]])
        eff = round(t1 / tn, 3) if t1 and tn else None
        rows.append({
            "n": n, "workers": n, "t1_s": t1, "tn_s": tn, "efficiency": eff,
            "met": eff is not None and eff >= TARGET,
            "t1_runs_s": t1_list, "tn_runs_s": [r["wall_s"] for r in runs[n]],
            # per member: training alone vs side by side, and what is not training
            "member_train_s_1": train1, "member_train_s_n": trainn,
            "train_efficiency": round(train1 / trainn, 3) if train1 and trainn else None,
            "member_start_s": _median([m["start_s"] for r in ok for m in r["members"]]),
            "member_first_epoch_s": _median([m["first_epoch_s"] for r in ok for m in r["members"]]),
            "process_exit_s": _median([r["process_exit_s"] for r in ok]),
            "results_s": _median([r["results_s"] for r in ok]),
            "end_s": _median([r["end_s"] for r in ok]),
            "cluster_start_s": _median([r["cluster_start_s"] for r in runs[n]]),
            "runs": runs[n]})

    print(f"\nensemble scaling, {args.framework}, {'GPU' if use_gpu else 'CPU'} ({what}); median of "
          f"{args.repeats} round(s); total {time.perf_counter() - t_all:.0f} s")
    print(f"{'N':>3}{'workers':>9}{'t1 (s)':>9}{'tN (s)':>9}{'efficiency':>12}{'target':>8}{'met':>5}"
          f"{'train 1 (s)':>13}{'train N (s)':>13}{'train eff':>11}{'1st epoch (s)':>15}{'end (s)':>9}")
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    for r in rows:
        print(f"{r['n']:>3}{r['workers']:>9}{fmt(r['t1_s'], '.1f'):>9}{fmt(r['tn_s'], '.1f'):>9}"
              f"{fmt(r['efficiency'], '.3f'):>12}{TARGET:>8.2f}{('yes' if r['met'] else 'no'):>5}"
              f"{fmt(r['member_train_s_1'], '.1f'):>13}{fmt(r['member_train_s_n'], '.1f'):>13}"
              f"{fmt(r['train_efficiency'], '.3f'):>11}{fmt(r['member_first_epoch_s'], '.1f'):>15}"
              f"{fmt(r['end_s'], '.1f'):>9}")
    for n, why in skipped.items():
        print(f"{n:>3}  skipped: {why}")
    print("t1: 1 member on 1 worker; tN: N members on N workers, train_ensemble() to wait(); efficiency = t1/tN.\n"
          "train 1/N: a member's training time (train_and_evaluate, framework import included) alone / side by "
          "side; 1st epoch: submit -> a member's first epoch ended (task start, process, imports, epoch 1);\n"
          "end: the last member's process said it was done -> wait() returned (process exit, result, consensus).")
    noisy = None
    if 1 in kept:
        print("N=1 compares two 1-member runs: its distance from 1.0 is the noise of the measurement.")
        e1 = rows[kept.index(1)]["efficiency"]
        noisy = e1 is not None and abs(e1 - 1) > 0.1
    if noisy or any(r["efficiency"] and r["efficiency"] > 1.1 and r["n"] > 1 for r in rows):
        noisy = True
        print("NOISY: the 1-member runs disagree by more than 10% (or N members beat one): the machine is shared or "
              "throttled; these figures do not measure the scaling. Use free cores/GPUs and --repeats 3 or more.")
    if args.quick:
        print("(--quick: tiny settings, fixed overhead dominates; not the figure the target is about)")

    result = {"framework": args.framework, "device": "gpu" if use_gpu else "cpu", "machine": what,
              "gpus": [n for _, n in found], "cores": cores, "threads_per_member": threads, "quick": args.quick,
              "frames": len(labels), "params": params, "repeats": args.repeats, "target": TARGET,
              "video_frames": args.video_frames if args.video else 0,
              "skipped": {str(n): why for n, why in skipped.items()}, "noisy": noisy,
              "load_average_end": round(os.getloadavg()[0], 2),
              "t1_runs": singles, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    summary = {k: v for k, v in result.items() if k not in ("t1_runs", "rows")}
    summary["rows"] = [{k: v for k, v in r.items() if k != "runs"} for r in rows]
    print("RESULT " + json.dumps(summary, default=str), flush=True)
    if failed:
        return 2
    if args.quick:
        return 0
    return 0 if all(r["met"] for r in rows if r["n"] > 1) else 1


if __name__ == "__main__":
    sys.exit(main())
