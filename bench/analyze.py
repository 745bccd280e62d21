#!/usr/bin/env python3
"""Batch video analysis: posehub.analyze's frames/s against the framework's own inference, and its scaling.

In one run, on DeepLabCut's open-field example:

  1. a SLEAP model: trained here with PoseHub's trainer (``train_and_evaluate``; tiny settings with
     --quick), or taken from --model (a PoseHub run folder with model.json); a clip of --frames frames
     (default 600) cut from the open-field video (H.264 .mp4, 640x480).
  2. speed against the framework: frames/s of ``posehub.analyze`` on a ``distributed.LocalCluster`` of
     1 worker process with 1 thread (one chunk per clip, batch --batch), from the ``analyze`` call to
     ``wait()`` returning (planning, scheduling, decoding, prediction, joining and writing the files),
     against sleap-nn's own ``Predictor`` (``Predictor.from_model_paths`` on the sleap-nn model folder
     PoseHub's trainer writes, ``predict(sio.Video(clip), make_labels=True)`` then ``labels.save(.slp)``:
     decoding, prediction, building and writing the predictions) in this process with 1 torch thread, the
     same device and the same predictor batch size. Both are warmed up before the clock starts (the worker's
     model loaded on its task thread; the predictor built and run once on a few frames). Ratio = posehub /
     framework, target >= 0.9. Beside them, for where the time goes: ``predict_video`` in this process, no
     Dask.
     Fair to both: sleap-nn's video reader decodes the next batch on a second thread while the model
     predicts (``VideoProvider(prefetch=True)``), and so does ``posehub.analyze`` (``infer.prefetch``); each
     has 1 torch thread and the machine's cores for its decoding thread; both read the clip with OpenCV.
  2b. --dlc: the same for DeepLabCut: a tiny DeepLabCut model (ResNet-50, analyze_steps.TINY_DLC: one
     epoch from random weights) trained with PoseHub's trainer, whose run folder is also a DeepLabCut
     project, on a clip of --dlc-frames frames (default 96; --quick 24: ResNet-50 on 640x480 frames takes
     1 to 2 s a frame on one CPU thread). ``posehub.analyze`` as above against DeepLabCut's own
     ``deeplabcut.analyze_videos(config.yaml, [clip], batch_size=<the run's>)`` in this process with 1 torch
     thread (reading the video, predicting and writing its .h5), warmed first on another short clip.
     analyze_videos builds its runner (loads the snapshot) inside the call, as a user runs it, where the
     warm worker has it already: that load is timed apart (``get_inference_runners``) and the ratio is
     taken against analyze_videos without it, the stricter of the two. The points of both are compared:
     the same model on the same frames gives the same numbers (max_diff).
  3. weak scaling (as bench/ensemble.py): t1 = one clip on a 1-worker cluster; tN = N clips (copies of the
     same clip, one per worker, one chunk each) on an N-worker cluster, 1 thread per worker, CPU.
     Efficiency = t1 / tN (ideal 1.0), target >= 0.85, for N in 1, 2, 4 up to the cores
     (os.cpu_count(); larger N skipped with a message). Clusters are started and warmed before the clock.
     The row N=1 compares two 1-worker runs: the noise of the measurement (NOISY beyond 10%).
  4. on a machine with an NVIDIA GPU: the step-2 figures are on the GPU (frames/s per GPU), printed beside
     the published inference speed of SLEAP.

    .envs/pose/bin/python bench/analyze.py --quick                 # a few minutes on a 2-core CPU
    .envs/pose/bin/python bench/analyze.py --quick --dlc           # and DeepLabCut: about 4 minutes more
    .envs/pose/bin/python bench/analyze.py [--model RUN] [--frames 600] [--n 1 2 4] [--json out.json]

Prints the figures and a final line ``RESULT {...}`` (JSON). Exit status: 0 when the targets are met
(always 0 with --quick unless a run failed), 1 when not, 2 when a run failed, 3 when the data is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the same torch threads here as in the Dask workers
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "extensions"))
sys.path.insert(0, str(REPO / "tests" / "analyze"))  # analyze_steps: train() with TINY_SLEAP, cut()
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "extensions")]
                                           + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

DATA = REPO.parent / "shared" / "data" / "openfield"
VIDEO = "videos/m3v1mp4.mp4"
RATIO_TARGET = 0.9
SCALING_TARGET = 0.85
QUICK_FRAMES = 96
DLC_FRAMES, DLC_QUICK_FRAMES = 96, 24
FIRST_FRAME = 100  # where the clip starts in the open-field video
# SLEAP's published inference speed. No figure for sleap-nn (the PyTorch backend) was found offline (its package
# carries no benchmark figures); the SLEAP paper's figure is for the TensorFlow SLEAP on a GPU.
PUBLISHED = ("SLEAP (TensorFlow backend, not sleap-nn): 'more than 800 frames per second' (Pereira et al. 2022, "
             "Nature Methods 19:486, abstract; single-animal flies, GPU, batch prediction); no published figure "
             "for sleap-nn's own inference speed was found offline")


def _warm(model, clip, batch, device, frames):
    """Load the model on this worker's task thread (its thread-local cache) and predict ``frames`` frames."""
    from posehub.analyze import predict_range

    _quiet()
    r = predict_range(model, clip, 0, frames, batch, device)
    return r["worker"], r["threads"], r["device"]


def _quiet():
    """sleap-nn logs a line per Predictor.predict call (PoseHub calls it once per batch): off, here and in workers."""
    try:
        from loguru import logger

        logger.disable("sleap_nn")
    except ImportError:
        pass


def run_in_process(model: Path, clip: Path, batch: int, device: str) -> dict:
    """posehub.analyze.predict_video in this process (no Dask): where the time goes, beside the cluster's figure."""
    import torch

    from posehub.analyze import predict_range, predict_video

    torch.set_num_threads(1)
    _quiet()
    predict_range(model, clip, 0, batch, batch, device)  # warm-up: the model loaded for this thread
    t0 = time.perf_counter()
    r = predict_video(model, clip, batch=batch, device=device)
    wall = time.perf_counter() - t0
    n = len(r["points"])
    return {"frames": n, "wall_s": round(wall, 3), "fps": round(n / wall, 2)}


def run_posehub(model: Path, clips: list[Path], workers: int, batch: int, device: str, work: Path,
                tag: str, timeout: float, warm_frames: int | None = None, points: bool = False) -> dict:
    """Start a LocalCluster of ``workers`` processes (1 thread each), warm it (``warm_frames`` frames, default
    ``batch``), time ``analyze`` of ``clips``; with ``points``, the first clip's points too."""
    from distributed import Client, LocalCluster

    from posehub.analyze import analyze

    frames = sum(_frames(c) for c in clips)
    per_clip = max(_frames(c) for c in clips)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50, local_directory=str(work / "dask" / tag)) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(workers, timeout=120)
        addrs = list(client.scheduler_info()["workers"])
        warm = client.gather([client.submit(_warm, str(model), str(clips[0]), batch, device, warm_frames or batch,
                                            pure=False, workers=[a], allow_other_workers=False) for a in addrs])
        t0 = time.perf_counter()
        job = analyze(model, [str(c) for c in clips], client=client, out=work / "out" / tag, chunk_frames=per_clip,
                      batch=batch, retries=0, device=device, name=tag)
        ok = job.wait(timeout)
        wall = time.perf_counter() - t0
        results = job.results() if ok else []
        if not ok:
            job.cancel(timeout=30)
    statuses = [r.status for r in results]
    chunk_workers = sorted({c.get("worker", "") for r in results for c in (r.chunks or []) if isinstance(c, dict)})
    out = {"ok": ok and all(s == "done" for s in statuses), "workers": workers, "clips": len(clips),
           "frames": frames, "wall_s": round(wall, 3), "fps": round(frames / wall, 2),
           "statuses": statuses, "errors": [r.error for r in results if r.error],
           "warm": [list(w) for w in warm], "chunk_workers": chunk_workers}
    if points and out["ok"]:
        out["points"] = results[0].points
    if not ok:
        out["error"] = f"not done within {timeout:.0f} s"
    return out


def run_sleap_nn(model: Path, clip: Path, device: str, work: Path) -> dict:
    """sleap-nn's own Predictor on the clip, in this process (1 torch thread), predictor built and warmed first;
    its predictions saved as a .slp file."""
    import sleap_io as sio
    import torch
    from sleap_nn.inference.predictor import Predictor

    from posehub.pose.run import load_model
    from posehub.pose.trainers.base import device as resolve

    torch.set_num_threads(1)
    _quiet()
    m = load_model(model)
    p = m.info["params"]
    dev = resolve({**p, "device": device})
    folder = Path(m.path) / m.info["model_dir"]
    predictor = Predictor.from_model_paths([str(folder)], device=dev, batch_size=p["batch_size"],
                                           peak_threshold=0.0)
    video = sio.load_video(str(clip))
    predictor.predict(video, frames=list(range(p["batch_size"])), make_labels=True)  # warm-up
    t0 = time.perf_counter()
    labels = predictor.predict(video, make_labels=True)
    labels.save(str(work / f"{clip.stem}.sleap-nn.slp"), verbose=False)
    wall = time.perf_counter() - t0
    n = len(video)
    video.close()
    return {"ok": True, "frames": n, "labelled_frames": len(labels.labeled_frames), "wall_s": round(wall, 3),
            "fps": round(n / wall, 2), "device": dev, "batch_size": p["batch_size"], "model_folder": str(folder),
            "threads": torch.get_num_threads()}


def run_dlc(model: Path, clip: Path, warm_clip: Path, device: str, work: Path) -> dict:
    """DeepLabCut's own analyze_videos on the clip, in this process (1 torch thread), after one on ``warm_clip``;
    the load of its runner timed apart; its points read back from the .h5 it writes."""
    import deeplabcut
    import numpy as np
    import pandas as pd
    import torch
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_inference_runners

    from posehub.pose.run import load_model
    from posehub.pose.trainers.base import device as resolve

    torch.set_num_threads(1)
    m = load_model(model)
    p = m.info["params"]
    dev = resolve({**p, "device": device})
    config = str(model / "project" / "config.yaml")
    t0 = time.perf_counter()
    get_inference_runners(model_config=str(model / m.info["pose_config"]),
                          snapshot_path=str(model / m.info["snapshot"]), max_individuals=1,
                          num_bodyparts=len(m.bodyparts), num_unique_bodyparts=0, batch_size=p["batch_size"],
                          device=dev)
    load_s = time.perf_counter() - t0
    kw = {"shuffle": 1, "trainingsetindex": 0, "device": dev, "batch_size": p["batch_size"]}
    deeplabcut.analyze_videos(config, [str(warm_clip)], destfolder=str(work / "dlc-warm"), **kw)
    dest = work / "dlc-out"
    t0 = time.perf_counter()
    scorer = deeplabcut.analyze_videos(config, [str(clip)], destfolder=str(dest), **kw)
    wall = time.perf_counter() - t0
    df = pd.read_hdf(next(dest.glob(f"{clip.stem}{scorer}*.h5")))
    xyl = df.to_numpy().reshape(len(df), len(m.bodyparts), 3)
    n = len(df)
    return {"ok": True, "frames": n, "wall_s": round(wall, 3), "fps": round(n / wall, 2), "load_s": round(load_s, 3),
            "fps_without_load": round(n / max(wall - load_s, 1e-9), 2), "device": dev,
            "batch_size": p["batch_size"], "scorer": scorer, "threads": torch.get_num_threads(),
            "points": np.asarray(xyl[..., :2], float)}


def measure_dlc(args, data: Path, work: Path, device: str, timeout: float) -> tuple[dict, bool]:
    """Step 2b: train the tiny DeepLabCut model, cut its clip, time both; ``(figures, failed)``."""
    import numpy as np

    from analyze_steps import cut, train

    frames = args.dlc_frames or (DLC_QUICK_FRAMES if args.quick else DLC_FRAMES)
    print(f"\n== DeepLabCut: posehub.analyze (LocalCluster, 1 worker x 1 thread) vs deeplabcut.analyze_videos "
          f"(this process, 1 thread), {frames} frames ==", flush=True)
    t = time.perf_counter()
    model = train(work, data, "dlc")
    out: dict = {"frames": frames, "train_s": round(time.perf_counter() - t, 1)}
    print(f"  model: trained tiny DeepLabCut (ResNet-50, 1 epoch) in {out['train_s']} s -> {model}", flush=True)
    clip = cut(data / VIDEO, work / "clips" / "dlc.mp4", FIRST_FRAME, frames)
    warm_clip = cut(data / VIDEO, work / "clips" / "dlc-warm.mp4", FIRST_FRAME + frames, 4)
    runner_batch = json.loads((model / "model.json").read_text())["info"]["params"]["batch_size"]
    ph = run_posehub(model, [clip], 1, args.batch, device, work, "dlc-speed", timeout, warm_frames=runner_batch,
                     points=True)
    fw = run_dlc(model, clip, warm_clip, device, work)
    theirs = fw.pop("points")
    if ph["ok"]:
        out["max_diff"] = float(np.nanmax(np.abs(ph.pop("points") - theirs)))
    out["posehub"], out["deeplabcut"] = ph, fw
    print(f"  posehub.analyze : {ph['fps']:8.2f} frames/s ({ph['frames']} frames in {ph['wall_s']:.2f} s, "
          f"analyze() -> wait(), files written)")
    print(f"  DeepLabCut      : {fw['fps']:8.2f} frames/s ({fw['frames']} frames in {fw['wall_s']:.2f} s, "
          f"analyze_videos, batch {fw['batch_size']}, {fw['device']}); {fw['fps_without_load']:.2f} frames/s "
          f"without loading its model ({fw['load_s']:.2f} s)")
    if not ph["ok"]:
        print(f"  posehub.analyze FAILED: {ph.get('error', '')} {ph['errors']}")
        return out, True
    ratio = ph["fps"] / fw["fps_without_load"]
    out["ratio"], out["ratio_with_load"] = round(ratio, 3), round(ph["fps"] / fw["fps"], 3)
    out["ratio_met"] = ratio >= RATIO_TARGET
    print(f"  same points: largest difference {out['max_diff']:.2g} px")
    print(f"  ratio posehub/DeepLabCut = {ratio:.2f} without its model load, {out['ratio_with_load']:.2f} with it "
          f"(target >= {RATIO_TARGET}): {'MET' if out['ratio_met'] else 'NOT MET'}"
          + ("  [--quick: tiny model and clip; indicative only]" if args.quick else ""), flush=True)
    return out, False


def _frames(path: Path) -> int:
    from posehub.analyze.infer import probe

    return probe(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a PoseHub SLEAP run folder (model.json); default: train one")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny model (analyze_steps.TINY_SLEAP), {QUICK_FRAMES} frames, N up to 2")
    ap.add_argument("--frames", type=int, default=None, help=f"frames in the clip (default 600; --quick {QUICK_FRAMES})")
    ap.add_argument("--batch", type=int, default=16, help="posehub.analyze's batch (frames per model call)")
    ap.add_argument("--n", nargs="+", type=int, default=None, help="workers for the scaling (default 1 2 4)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="step 2's device (auto: the GPU when there is one); the scaling is on the CPU")
    ap.add_argument("--dlc", action="store_true", help="also DeepLabCut: analyze_videos against posehub.analyze")
    ap.add_argument("--dlc-frames", type=int, default=None,
                    help=f"frames in DeepLabCut's clip (default {DLC_FRAMES}; --quick {DLC_QUICK_FRAMES})")
    ap.add_argument("--timeout", type=float, default=None, help="seconds one analysis may take (default 1800)")
    ap.add_argument("--data", default=str(DATA), help="DeepLabCut's open-field project")
    ap.add_argument("--workdir", default=None, help="where the model, clips and outputs go (default: temporary)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    frames = args.frames or (QUICK_FRAMES if args.quick else 600)
    ns = sorted(set(args.n or ([1, 2] if args.quick else [1, 2, 4])))
    timeout = args.timeout or 1800
    data = Path(args.data)
    if not (data / VIDEO).is_file():
        print(f"open-field video not found: {data / VIDEO}; nothing was measured", file=sys.stderr)
        return 3

    import torch

    cores = os.cpu_count() or 1
    cuda = torch.cuda.is_available()
    device = args.device if args.device != "auto" else ("cuda" if cuda else "cpu")
    print(f"machine: {cores} CPU core(s) (os.cpu_count()), load average {os.getloadavg()[0]:.1f} before the run, "
          f"{'GPU: ' + torch.cuda.get_device_name(0) if cuda else 'no NVIDIA GPU'}; step 2 on {device}", flush=True)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="posehub-bench-analyze-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"frames": frames, "batch": args.batch, "cores": cores, "cuda": cuda, "device": device,
                    "quick": args.quick}
    failed = False
    try:
        from analyze_steps import cut, train

        t = time.perf_counter()
        if args.model:
            model = Path(args.model)
            print(f"model: {model}")
        else:
            if not args.quick:
                print("note: no --model; training the tiny SLEAP model (analyze_steps.TINY_SLEAP) — speed only, "
                      "not a model worth its predictions", flush=True)
            model = train(work, data)
            result["train_s"] = round(time.perf_counter() - t, 1)
            print(f"model: trained tiny SLEAP in {result['train_s']} s -> {model}", flush=True)
        mj = json.loads((model / "model.json").read_text())
        if mj.get("framework") != "sleap":
            print(f"the model is {mj.get('framework')!r}: this benchmark measures SLEAP models", file=sys.stderr)
            return 2
        clips_dir = work / "clips"
        clips_dir.mkdir(exist_ok=True)
        t = time.perf_counter()
        clip = cut(data / VIDEO, clips_dir / "clip0.mp4", FIRST_FRAME, frames)
        extra = []
        for i in range(1, max(ns)):
            extra.append(clips_dir / f"clip{i}.mp4")
            shutil.copyfile(clip, extra[-1])
        print(f"clip: {frames} frames of {VIDEO} from frame {FIRST_FRAME}, 640x480 ({time.perf_counter() - t:.1f} s)",
              flush=True)

        # 2. posehub.analyze (1 worker, 1 thread) against sleap-nn's own predictor
        print("\n== speed: posehub.analyze (LocalCluster, 1 worker x 1 thread) vs sleap-nn's Predictor "
              "(this process, 1 thread) ==", flush=True)
        ph = run_posehub(model, [clip], 1, args.batch, device, work, "speed", timeout)
        fw = run_sleap_nn(model, clip, device, work)
        ip = run_in_process(model, clip, args.batch, device)
        result["posehub"], result["sleap_nn"], result["posehub_in_process"] = ph, fw, ip
        if not ph["ok"]:
            failed = True
            print(f"  posehub.analyze FAILED: {ph.get('error', '')} {ph['errors']}")
        ratio = ph["fps"] / fw["fps"] if ph["ok"] else None
        result["ratio"] = round(ratio, 3) if ratio is not None else None
        print(f"  posehub.analyze : {ph['fps']:8.1f} frames/s ({ph['frames']} frames in {ph['wall_s']:.2f} s, "
              f"analyze() -> wait(), files written)")
        print(f"  sleap-nn        : {fw['fps']:8.1f} frames/s ({fw['frames']} frames in {fw['wall_s']:.2f} s, "
              f"Predictor.predict(video) and the .slp saved, batch {fw['batch_size']}, {fw['device']})")
        print(f"  (predict_video  : {ip['fps']:8.1f} frames/s in this process, no Dask: PoseHub's predict path; "
              f"{ip['wall_s']:.2f} s)")
        if ratio is not None:
            met = ratio >= RATIO_TARGET
            result["ratio_met"] = met
            print(f"  ratio posehub/sleap-nn = {ratio:.2f} (target >= {RATIO_TARGET}): {'MET' if met else 'NOT MET'}"
                  + ("  [--quick: tiny model and clip; indicative only]" if args.quick else ""))
        if args.dlc:
            result["dlc"], dlc_failed = measure_dlc(args, data, work, device, timeout)
            failed = failed or dlc_failed

        # 4. per GPU beside the published figure
        print("\n== GPU ==")
        if cuda and device == "cuda":
            result["gpu"] = {"name": torch.cuda.get_device_name(0), "posehub_fps_per_gpu": ph["fps"],
                             "sleap_nn_fps": fw["fps"], "published": PUBLISHED}
            print(f"  {result['gpu']['name']}: posehub.analyze {ph['fps']:.1f} frames/s per GPU, sleap-nn "
                  f"{fw['fps']:.1f} frames/s (1 worker, batch {args.batch})")
            print(f"  published: {PUBLISHED}")
        else:
            result["gpu"] = {"skipped": "no NVIDIA GPU (torch.cuda.is_available() is False)" if not cuda
                             else "--device cpu"}
            print(f"  skipped: {result['gpu']['skipped']}")

        # 3. weak scaling on the CPU
        print(f"\n== weak scaling (CPU, 1 thread per worker; t1 = 1 clip on 1 worker, tN = N clips on N workers; "
              f"efficiency t1/tN, target >= {SCALING_TARGET}) ==", flush=True)
        clips = [clip] + extra
        t1 = run_posehub(model, clips[:1], 1, args.batch, "cpu", work, "scale-t1", timeout)
        if not t1["ok"]:
            failed = True
        rows = []
        for n in ns:
            if n > cores:
                msg = f"N={n}: skipped: only {cores} core(s)"
                print(f"  {msg}")
                rows.append({"workers": n, "skipped": msg})
                continue
            r = run_posehub(model, clips[:n], n, args.batch, "cpu", work, f"scale-{n}", timeout)
            if not r["ok"]:
                failed = True
                print(f"  N={n}: FAILED {r.get('error', '')} {r['errors']}")
                rows.append(r)
                continue
            eff = t1["wall_s"] / r["wall_s"]
            r["efficiency"] = round(eff, 3)
            if n == 1:
                r["noisy"] = abs(1 - eff) > 0.10
                verdict = "NOISY (two 1-worker runs differ by more than 10%)" if r["noisy"] else "noise check"
            else:
                r["met"] = eff >= SCALING_TARGET
                verdict = "MET" if r["met"] else "NOT MET"
            print(f"  N={n}: t1 {t1['wall_s']:.2f} s, tN {r['wall_s']:.2f} s ({r['frames']} frames, "
                  f"{r['fps']:.1f} frames/s in all, {r['fps'] / n:.1f} per worker), efficiency {eff:.2f}: {verdict}",
                  flush=True)
            rows.append(r)
        if cores < 4 and any(r.get("workers", 0) > 1 for r in rows if "skipped" not in r):
            print(f"  note: {cores} core(s) in all: the cluster's scheduler, this client and the workers share them; "
                  "N = cores is NOISY")
        result["scaling"] = {"t1": t1, "rows": rows}
    except Exception as e:  # noqa: BLE001 - report the failure with what was measured
        import traceback

        traceback.print_exc()
        result["error"] = f"{type(e).__name__}: {e}"
        failed = True
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    result["load_average"] = round(os.getloadavg()[0], 2)  # other work on the machine makes the figures noisy
    print(f"\nload average after the run: {result['load_average']:.1f} on {cores} core(s)")
    print("\nRESULT " + json.dumps(result, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    if failed:
        return 2
    if args.quick:
        return 0
    met = ([result.get("ratio_met"), result.get("dlc", {}).get("ratio_met")]
           + [r.get("met") for r in result.get("scaling", {}).get("rows", []) if "met" in r])
    return 0 if all(m for m in met if m is not None) else 1


if __name__ == "__main__":
    sys.exit(main())
