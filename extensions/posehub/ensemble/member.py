"""One ensemble member, in its own process: ``python -m posehub.ensemble.member <job.pickle>``.

Started by the member's Dask task (:mod:`posehub.ensemble.task`), which
relays what this process says and kills it on cancel. It trains with the
member's seed on the ensemble's split, evaluates on the held-out frames,
predicts the test frames and the sampled video frames, writes
``predictions.npz`` beside the model and copies the run to the member's
destination.

Protocol: one JSON object per line on standard output, e.g.
``{"phase": "training", "epoch": 2, "epochs": 10, "loss": 0.01}``; phases
``loading``, ``training``, ``evaluating``, ``predicting``, ``done`` (with
``url``, ``metrics``, ``predictions``) or ``error``; ``{"log": "..."}`` for
messages. Everything else the tools print goes to standard error, which the
task relays as log text.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .spec import FsRef

PREDICTIONS = "predictions.npz"


@dataclass
class MemberJob:
    ensemble_id: str
    index: int
    seed: int
    framework: str
    params: dict
    split: object  # posehub.pose.split.Split
    labels: object  # posehub.pose.labels.Labels, its fs left out (see labels_fs)
    dest: str  # this member's folder
    labels_fs: FsRef | None = None
    dest_fs: FsRef | None = None
    video: str | None = None
    video_frames: int | list[int] = 0
    video_fs: FsRef | None = None


def video_indices(frames: int | list[int], count: int) -> list[int]:
    """``frames`` indices spread evenly over a video of ``count`` frames, or the given indices."""
    if isinstance(frames, int):
        if frames <= 0 or count <= 0:
            return []
        import numpy as np

        return sorted({int(i) for i in np.linspace(0, count - 1, min(frames, count)).round()})
    bad = [i for i in frames if i >= count]
    if bad:
        raise ValueError(f"video frame {bad[0]} is outside the video ({count} frames)")
    return list(frames)


def _local_video(job: MemberJob, workdir: Path) -> str:
    if job.video_fs is None and "://" not in job.video:
        return job.video
    if job.video_fs is not None:
        fs, path = job.video_fs.open(), job.video
    else:
        import fsspec

        fs, path = fsspec.core.url_to_fs(job.video)
    local = workdir / ("video" + Path(job.video).suffix)
    fs.get_file(path, str(local))
    return str(local)


def _predict_images(trainer, model, images, batch: int = 16):
    from ..pose.trainers import Prediction
    import numpy as np

    out = [trainer.predict(model, images[i:i + batch]) for i in range(0, len(images), batch)]
    cm = [p.confmaps for p in out]
    return Prediction(np.concatenate([p.points for p in out]), np.concatenate([p.scores for p in out]),
                      np.concatenate(cm) if all(c is not None for c in cm) else None, out[0].stride)


def run(job: MemberJob, workdir: Path, emit) -> dict:
    import numpy as np

    from ..pose import show, trainers
    from ..pose.run import copy_run, train_and_evaluate

    labels = job.labels
    if job.labels_fs is not None:
        labels.fs = job.labels_fs.open()
    trainer = trainers.get(job.framework)()
    trainer.confmaps = True  # confidence maps into predictions.npz where the tool gives them (SLEAP); else keypoints
    epochs = int(job.params.get("epochs", 0))

    def progress(e):
        emit({"phase": "training", "epoch": e["epoch"], "epochs": e["epochs"], "loss": e.get("loss")})
        if e["epoch"] >= e["epochs"]:
            emit({"phase": "evaluating"})

    emit({"phase": "training", "epoch": 0, "epochs": epochs, "loss": None})
    r = train_and_evaluate(labels, job.framework, params=job.params, seed=job.seed, split=job.split,
                           workdir=workdir / "run", progress=progress)
    emit({"phase": "predicting"})
    test = trainer.predict_frames(r.model, labels, job.split.test)
    arrays = {"test_frames": np.array(job.split.test, dtype=int), "test_points": test.points,
              "test_scores": test.scores, "stride": np.array(test.stride),
              "image_shape": np.array(labels.read_image(0).shape[:2])}
    if test.confmaps is not None:
        arrays["test_confmaps"] = test.confmaps.astype(np.float32, copy=False)
    if job.video:
        local = _local_video(job, workdir)
        idx = video_indices(job.video_frames, show.frame_count(local))
        arrays["video_frames"] = np.array(idx, dtype=int)
        if idx:
            emit({"log": f"predicting {len(idx)} frame(s) of {job.video}"})
            v = _predict_images(trainer, r.model, show.video_frames(local, idx))
            arrays.update(video_points=v.points, video_scores=v.scores)
            if v.confmaps is not None:
                arrays["video_confmaps"] = v.confmaps.astype(np.float32, copy=False)
                arrays["video_stride"] = np.array(v.stride)  # the video's frames may differ in size
    np.savez_compressed(r.local_dir / PREDICTIONS, **arrays)
    url = copy_run(r.local_dir, job.dest, job.dest_fs.open() if job.dest_fs is not None else None)
    return {"url": url, "metrics": r.metrics, "predictions": str(r.local_dir / PREDICTIONS),
            "train_s": r.record["timings_s"].get("train"), "device": r.record.get("device", "")}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol keeps the real stdout...
    os.dup2(2, 1)  # ...and whatever the tools print goes to stderr, relayed as log text

    lock = threading.Lock()  # the training log watcher reports from its own thread

    def emit(msg: dict) -> None:
        line = json.dumps({"t": round(time.time(), 3), **msg}, default=str) + "\n"
        with lock:
            proto.write(line)
            proto.flush()

    try:
        emit({"phase": "loading"})
        job_file = Path(argv[0])
        with open(job_file, "rb") as f:
            job = pickle.load(f)
        out = run(job, job_file.parent, emit)
        emit({"phase": "done", **out})
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the task, which decides about retries
        traceback.print_exc()
        emit({"phase": "error", "error": f"{type(e).__name__}: {e}"})
        return 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # everything is written and reported: skip tearing down torch and friends (seconds per member)
    os._exit(code)
