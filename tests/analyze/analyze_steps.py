"""Batch analysis in the pose image's environment, run by test_analyze_pose.py.

    .envs/pose/bin/python tests/analyze/analyze_steps.py {writers,bad-input,dask,agree-sleap,agree-dlc} OUT DATA

``writers`` writes a DeepLabCut and a SLEAP analysis of known arrays and reads them back with DeepLabCut's and
sleap-io's own readers. ``bad-input`` gives ``analyze`` a corrupt video, an empty one, a missing model folder
and a glob matching nothing, with a client that fails if it is used. ``dask`` trains a tiny SLEAP model on the
open-field labels, cuts three short clips from the open-field video (and puts a corrupt, an empty and a
truncated one beside them), analyses them on ``LocalCluster(n_workers=2, threads_per_worker=1,
processes=True)`` in chunks of 24 frames, kills a worker process once a chunk is done, predicts each clip again
in one pass here (``predict_video``), then cancels a second analysis. ``agree-sleap`` and ``agree-dlc`` train a
tiny model and compare ``predict_video`` with the trainer's ``predict`` on the same frames. Each prints one JSON
line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the same torch threads as the Dask workers (their nanny sets 1)
os.environ.setdefault("WANDB_MODE", "disabled")

CSV = "labeled-data/m4s1/CollectedData_Pranav.csv"
VIDEO = "videos/m3v1mp4.mp4"
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
# a tiny SLEAP model that finds something on every frame (fewer steps leave most points NaN): 150 steps of 4 frames,
# about a minute on 2 CPUs; its points are rough but deterministic, which is what comparing prediction paths needs
TINY_SLEAP = {"epochs": 150, "scale": 0.25, "filters": 8, "max_stride": 8, "batch_size": 4, "learning_rate": 5e-3,
              "augment": False, "validation_fraction": 0.1, "steps_per_epoch": 1, "device": "cpu"}
# a tiny DeepLabCut model (one epoch of ResNet-50 from random weights): about 60 s on 2 CPUs; its points are
# arbitrary but deterministic, which is all a comparison of two prediction paths needs
TINY_DLC = {"epochs": 1, "crop": 128, "batch_size": 4, "weights": "scratch", "device": "cpu"}
TINY = {"sleap": TINY_SLEAP, "dlc": TINY_DLC}
CLIPS = {"clipA": (0, 90), "clipB": (700, 75), "clipC": (1500, 60)}  # name: (first frame, frames)
CHUNK, BATCH = 20, 8  # chunks of 24 frames (rounded up to whole batches): 4, 4 and 3 chunks


class NoClient:
    """A Dask client that must not be used."""

    def __getattr__(self, name):
        raise AssertionError(f"client.{name} was used before the input was checked")


def listed(a) -> list:
    return np.where(np.isfinite(a), a, -1.0).tolist()


def cut(src: Path, dest: Path, first: int, count: int, faststart: bool = False) -> Path:
    """``count`` frames of ``src`` from ``first``, as an H.264 .mp4 (OpenCV reads, imageio-ffmpeg writes)."""
    import cv2
    import imageio.v2 as iio

    cap = cv2.VideoCapture(str(src))
    cap.set(cv2.CAP_PROP_POS_FRAMES, first)
    extra = ["-movflags", "+faststart"] if faststart else []
    w = iio.get_writer(str(dest), fps=30, codec="libx264", quality=8, macro_block_size=16, output_params=extra)
    for _ in range(count):
        ok, frame = cap.read()
        assert ok
        w.append_data(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    w.close()
    cap.release()
    return dest


def fake_plan(out: Path, framework: str, video: Path):
    from posehub.analyze.plan import make_plan

    run = out / f"run-{framework}"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"framework": framework, "bodyparts": BODYPARTS, "info": {}}))
    return make_plan(run, video, out=out / f"out-{framework}", probe=lambda p: 5)


def writers(out: Path, data: Path) -> dict:
    import sleap_io as sio
    from deeplabcut.utils.auxiliaryfunctions import load_analyzed_data

    from posehub.analyze import outputs

    rng = np.random.default_rng(0)
    points = rng.uniform(0, 480, (5, 4, 2))
    points[1, 2] = np.nan  # a body part not found
    points[3] = np.nan  # nothing found on frame 3
    scores = rng.uniform(0, 1, (5, 4))
    scores[3] = 0.0
    video = data / VIDEO
    got = {}

    plan = fake_plan(out, "dlc", video)
    r = outputs.write(plan, plan.videos[0], points, scores, [])
    df, path, scorer, _ = load_analyzed_data(str(out / "out-dlc"), "m3v1mp4", "DLC_posehub")  # DeepLabCut's reader
    want = outputs.dlc_frame(points, scores, BODYPARTS)
    import pandas as pd

    csv_df = pd.read_csv(r.files["dlc_csv"], header=[0, 1, 2], index_col=0)
    got["dlc"] = {"files": sorted(Path(f).name for f in r.files.values()), "path": path, "scorer": scorer,
                  "columns": [list(c) for c in df.columns], "names": list(df.columns.names),
                  "index": [int(i) for i in df.index], "equal": bool(df.equals(want)),
                  "csv_equal": bool(np.allclose(csv_df.to_numpy(), want.to_numpy(), equal_nan=True)),
                  "csv_columns_equal": [tuple(c) for c in csv_df.columns] == list(want.columns),
                  "key": hdf_keys(path)}

    plan = fake_plan(out, "sleap", video)
    r = outputs.write(plan, plan.videos[0], points, scores, [])
    labels = sio.load_slp(r.files["slp"])
    frames = sorted(labels.labeled_frames, key=lambda lf: lf.frame_idx)
    got["sleap"] = {
        "files": sorted(Path(f).name for f in r.files.values()), "video": labels.videos[0].filename,
        "nodes": list(labels.skeletons[0].node_names), "frames": [int(lf.frame_idx) for lf in frames],
        "kinds": [type(i).__name__ for lf in frames for i in lf.instances],
        "points_equal": all(np.allclose(lf.instances[0].numpy()[:, :2], points[lf.frame_idx], equal_nan=True)
                            for lf in frames),
        "scores_equal": all(np.allclose(lf.instances[0].numpy(scores=True)[:, 2], scores[lf.frame_idx])
                            for lf in frames),
        "instance_scores": [round(float(lf.instances[0].score), 6) for lf in frames],
        "want_instance_scores": [round(float(scores[lf.frame_idx].mean()), 6) for lf in frames],
        "frame_shape": list(labels.videos[0].shape[1:3]),
    }
    return got


def hdf_keys(path) -> list[str]:
    import pandas as pd

    with pd.HDFStore(path, "r") as store:
        return list(store.keys())


def bad_input(out: Path, data: Path) -> dict:
    from posehub.analyze import AnalyzeError, analyze

    run = out / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"framework": "sleap", "bodyparts": BODYPARTS, "info": {}}))
    (out / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    (out / "empty.mp4").write_bytes(b"")
    (out / "notes.mp4").write_text("frame 1: the mouse sleeps\n")
    cases = {"corrupt": (run, out / "corrupt.mp4"), "empty": (run, out / "empty.mp4"),
             "text": (run, out / "notes.mp4"), "both": (run, [out / "corrupt.mp4", out / "empty.mp4"]),
             "no_model": (out / "nowhere", data / VIDEO), "no_match": (run, str(out / "*.avi"))}
    got = {}
    for name, (model, videos) in cases.items():
        try:
            analyze(model, videos, client=NoClient())
            got[name] = "no error"
        except AnalyzeError as e:
            got[name] = str(e)
        except AssertionError as e:
            got[name] = f"client used: {e}"
    return got


def wait_for(cond, timeout: float, what: str, job=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout} s; progress: {job.progress() if job else ''}")


def train(out: Path, data: Path, framework: str = "sleap") -> Path:
    """A tiny model (``TINY``) of ``framework`` trained on the open-field labels, in ``out/model`` (SLEAP) or
    ``out/model-<framework>``."""
    from posehub.pose import load_labels
    from posehub.pose.run import train_and_evaluate

    labels = load_labels(str(data / CSV)).subset(range(0, 116, 2))
    folder = out / ("model" if framework == "sleap" else f"model-{framework}")
    train_and_evaluate(labels, framework, TINY[framework], seed=0, workdir=folder)
    return folder


def dask(out: Path, data: Path) -> dict:
    from distributed import Client, LocalCluster

    from posehub.analyze import analyze, predict_video

    t0 = time.monotonic()
    model = train(out, data)
    clips = out / "clips"
    clips.mkdir()
    for name, (first, count) in CLIPS.items():
        cut(data / VIDEO, clips / f"{name}.mp4", first, count)
    (clips / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(40_000))
    (clips / "empty.mp4").write_bytes(b"")
    whole = cut(data / VIDEO, out / "whole.mp4", 300, 60, faststart=True)  # its index first: it opens when cut
    (clips / "truncated.mp4").write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    result: dict = {"train_s": round(time.monotonic() - t0, 1)}

    t1 = time.monotonic()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as client:
        job = analyze(model, str(clips / "*.mp4"), client=client, out=out / "analysis", chunk_frames=CHUNK,
                      batch=BATCH, retries=1, low_confidence=0.03, name="clips")
        result["plan"] = {v.name: {"chunks": v.chunks, "error": v.error} for v in job.plan.videos}
        updates = []
        job.on_update(lambda j: updates.append([p["status"] for p in j.progress()]))

        def running_chunk():
            pr = job.progress()
            if sum(p["chunks_done"] for p in pr) < 1:
                return None
            return next((dict(c, video=p["name"]) for p in pr if p["name"] in CLIPS for c in p["chunk_states"]
                         if c["state"] == "running" and c["pid"]), None)

        killed = wait_for(running_chunk, 180, "a chunk running once one is done", job)
        os.kill(killed["pid"], signal.SIGKILL)
        result["killed"] = killed
        assert job.wait(240), f"not done in 240 s: {job.progress()}"
        result["analysis_s"] = round(time.monotonic() - t1, 1)
        results = job.results()
        result["progress"] = job.progress()
        result["table"] = json.loads(job.table().to_json(orient="index"))
        result["updates"] = updates[-1] if updates else None

        # the reference: each clip in one pass, in this process (the same batch size; 1 torch thread as the workers)
        t2 = time.monotonic()
        result["videos"] = {}
        for r in results:
            name = Path(r.video).stem
            entry = {"status": r.status, "error": r.error, "frames": r.frames, "files": r.files, "chunks": r.chunks,
                     "mean_confidence": r.mean_confidence, "low_confidence_share": r.low_confidence_share}
            if r.status == "done":
                ref = predict_video(model, r.video, batch=BATCH)
                entry["equal"] = bool(np.array_equal(ref["points"], r.points, equal_nan=True)
                                      and np.array_equal(ref["scores"], r.scores))
                entry["max_diff"] = float(np.nanmax(np.abs(ref["points"] - r.points)))
                entry["ref_frames"] = len(ref["points"])
                entry["ref_nan_share"] = float(np.isnan(ref["points"]).mean())
                per_frame = ref["scores"].mean(axis=1)
                entry["ref_mean_confidence"] = float(ref["scores"].mean())
                entry["ref_low_share"] = float((per_frame < 0.03).mean())
                entry["files_equal"] = files_equal(r.files, ref)
            result["videos"][name] = entry
        result["reference_s"] = round(time.monotonic() - t2, 1)

        # a second analysis, cancelled once a chunk is done: it stops, and writes nothing for what it did not finish
        job2 = analyze(model, [clips / "clipA.mp4", clips / "clipB.mp4"], client=client, out=out / "cancelled",
                       chunk_frames=8, batch=8, name="cancelled")
        wait_for(lambda: sum(p["chunks_done"] for p in job2.progress()) >= 1, 120, "a chunk done", job2)
        t3 = time.monotonic()
        result["cancel_confirmed"] = job2.cancel(timeout=30)
        result["cancel_s"] = round(time.monotonic() - t3, 2)
        result["cancel_done"] = job2.wait(30)
        result["cancel_progress"] = job2.progress()
        time.sleep(2)  # nothing moves any more
        result["cancel_progress_later"] = job2.progress()
        result["cancel_results"] = [(Path(r.video).name, r.status, r.files) for r in job2.results()]
        result["cancel_files"] = sorted(p.name for p in (out / "cancelled").glob("*")) if (
            out / "cancelled").exists() else []
        result["free_after"] = client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3
    result["total_s"] = round(time.monotonic() - t0, 1)
    return result


def tinted(src: Path, dest: Path, first: int, count: int) -> Path:
    """``count`` frames of ``src`` from ``first`` with the red channel dimmed: a colour video (the open-field
    video is grey: its three channels are equal)."""
    import cv2
    import imageio.v2 as iio

    cap = cv2.VideoCapture(str(src))
    cap.set(cv2.CAP_PROP_POS_FRAMES, first)
    w = iio.get_writer(str(dest), fps=30, codec="libx264", quality=8, macro_block_size=16)
    for _ in range(count):
        ok, frame = cap.read()
        assert ok
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        rgb[..., 0] = rgb[..., 0] // 2
        w.append_data(rgb)
    w.close()
    cap.release()
    return dest


def agree(out: Path, data: Path, framework: str, frames: int, batch: int, kinds=("grey", "colour")) -> dict:
    """``predict_video`` (the tool's inference on frames in memory) against the trainer's ``predict`` (SLEAP:
    through PNG files; DeepLabCut: a runner built per call) on the same decoded frames, in batches of
    ``batch``, for a grey clip and a colour one (``kinds``); and a chunked prediction against the one pass."""
    from posehub.analyze import predict_range, predict_video
    from posehub.analyze.infer import read_frames
    from posehub.pose import trainers
    from posehub.pose.run import load_model

    model = train(out, data, framework)
    make = {"grey": lambda: cut(data / VIDEO, out / "grey.mp4", 500, frames),
            "colour": lambda: tinted(data / VIDEO, out / "colour.mp4", 900, frames)}
    clips = {kind: make[kind]() for kind in kinds}
    trainer, m = trainers.get(framework)(), load_model(model)
    got: dict = {}
    for name, clip in clips.items():
        images = list(read_frames(clip, 0, frames))
        ref = [trainer.predict(m, images[i:i + batch]) for i in range(0, frames, batch)]
        points, scores = np.concatenate([r.points for r in ref]), np.concatenate([r.scores for r in ref])
        one = predict_video(model, clip, batch=batch, device="cpu")
        half = frames // 2 // batch * batch
        parts = [predict_range(model, clip, a, b, batch, "cpu") for a, b in ((0, half), (half, frames))]
        got[name] = {
            "frames": len(one["points"]),
            "grey_frames": bool(np.array_equal(images[0][..., 0], images[0][..., -1])),
            "nan_share": float(np.isnan(points).mean()),
            "nan_equal": bool((np.isnan(points) == np.isnan(one["points"])).all()),
            "max_diff": float(np.nanmax(np.abs(one["points"] - points))),
            "max_score_diff": float(np.abs(one["scores"] - scores).max()),
            "chunks_equal": bool(
                np.array_equal(np.concatenate([p["points"] for p in parts]), one["points"], equal_nan=True)
                and np.array_equal(np.concatenate([p["scores"] for p in parts]), one["scores"])),
        }
        if name == "grey":  # an ensemble of two copies of the model: their consensus is the model's own points
            import shutil

            ens = out / "ensemble"
            for i in (0, 1):
                shutil.copytree(model, ens / f"member-{i}")
            (ens / "ensemble.json").write_text(json.dumps({"id": "e", "framework": framework, "members": [
                {"index": i, "status": "done", "url": f"s3://lab/e/member-{i}"} for i in (0, 1)]}))
            e = predict_video(ens, clip, batch=batch, device="cpu")
            got[name]["ensemble_equal"] = bool(np.array_equal(e["points"], one["points"], equal_nan=True)
                                               and np.array_equal(e["scores"], one["scores"]))
    return got


def files_equal(files: dict, ref: dict) -> dict:
    """Each written file read back against the one-pass reference: PoseHub's CSV (3 decimals: within 5e-4 px)
    and SLEAP's .slp (sleap-io's own reader)."""
    import csv

    import sleap_io as sio

    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    n, k = ref["points"].shape[:2]
    cell = lambda v: float(v) if v else np.nan  # noqa: E731
    xy = np.array([[cell(r["x"]), cell(r["y"])] for r in rows]).reshape(n, k, 2)
    conf = np.array([cell(r["confidence"]) for r in rows]).reshape(n, k)
    labels = sio.load_slp(files["slp"])
    slp = np.full((n, k, 2), np.nan)
    slp_scores = np.zeros((n, k))
    for lf in labels.labeled_frames:
        arr = lf.instances[0].numpy(scores=True)
        slp[lf.frame_idx], slp_scores[lf.frame_idx] = arr[:, :2], arr[:, 2]
    rec = json.loads(Path(files["record"]).read_text())
    return {"csv_rows": len(rows) == n * k,
            "csv": bool(np.allclose(xy, ref["points"], atol=5e-4, rtol=0, equal_nan=True)
                        and np.allclose(conf, ref["scores"], atol=5e-6, rtol=0)),
            "slp": bool(np.allclose(slp, ref["points"], atol=1e-5, rtol=0, equal_nan=True)
                        and np.allclose(slp_scores, ref["scores"], atol=1e-5, rtol=0)),
            "slp_video": labels.videos[0].filename,
            "record_chunks": [(c["start"], c["stop"]) for c in rec["chunks"]],
            "record_frames": rec["frames"], "record_workers": rec["workers"],
            "record_model_seed": rec["model"]["run"].get("seed"), "record_sha256": rec["video"]["sha256"]}


if __name__ == "__main__":
    mode, out, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    steps = {"writers": writers, "bad-input": bad_input, "dask": dask,
             "agree-sleap": lambda o, d: agree(o, d, "sleap", frames=40, batch=16),
             "agree-dlc": lambda o, d: agree(o, d, "dlc", frames=4, batch=2, kinds=("grey",))}
    print(json.dumps(steps[mode](out, data), default=str))
