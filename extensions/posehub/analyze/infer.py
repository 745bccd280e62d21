"""One range of a video's frames through a trained model: what each chunk's task runs, and the reference.

:func:`predict_range` loads the model (once per thread of a process: a Dask
worker's task threads each keep their own, so several chunks on one worker
predict side by side without sharing a predictor), reads frames
``start..stop`` by seeking once and decoding in order (OpenCV's per-frame seek
in :func:`posehub.pose.show.video_frames` costs about 40 ms a frame on the
open-field video, decoding in order about 2 ms), and predicts them in batches
whose edges are multiples of ``batch`` (:func:`posehub.analyze.plan.batches`).
:func:`predict_video` is the same in one pass: the reference the chunked
analysis must equal.

Determinism: the trainers predict in eval mode with no sampling; here cuDNN's
autotuner is switched off (``benchmark = False``, ``deterministic = True``),
and each frame is predicted in the same batch whichever chunk reads it. On
one machine kind, with the same number of torch threads, chunks give the same
bits as one pass. Torch's CPU kernels may round differently with another
thread count (about 1e-8 on the open-field model) and a GPU rounds
differently from a CPU: ``threads`` and ``device`` are in each chunk's result.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np

from .plan import AnalyzeError, batches

_local = threading.local()  # this thread's model: {key: (trainer, model)}


class Cancelled(RuntimeError):
    """The analysis was cancelled while this range was being predicted."""


# ------------------------------------------------------------------ video


def probe(path) -> int:
    """The frame count of a video that OpenCV can open and whose first frame decodes; else
    :class:`AnalyzeError` naming the file and what is wrong."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise AnalyzeError(f"video {path}: no such file")
    if p.stat().st_size == 0:
        raise AnalyzeError(f"video {path}: an empty file (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise AnalyzeError(f"video {path}: not a readable video (OpenCV cannot open it: corrupt, or not a video)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            raise AnalyzeError(f"video {path}: not a readable video (0 frames)")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise AnalyzeError(f"video {path}: not a readable video (its first frame cannot be decoded)")
        return n
    finally:
        cap.release()


def read_frames(path, start: int, stop: int):
    """RGB frames ``start..stop`` of a video, one at a time: one seek, then decoding in order."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise AnalyzeError(f"video {path}: not a readable video (OpenCV cannot open it)")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(start))
            at = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            if at != start:
                raise AnalyzeError(f"video {path}: seeking to frame {start} landed on frame {at}")
        for i in range(int(start), int(stop)):
            ok, frame = cap.read()
            if not ok or frame is None:
                raise AnalyzeError(f"video {path}: frame {i} cannot be read (the video says it has {total} frames)")
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


# ------------------------------------------------------------------ model


def _deterministic() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.backends.cudnn.benchmark = False  # the autotuner may pick another algorithm from one call to the next
    torch.backends.cudnn.deterministic = True


def load(model_dir, device: str = "auto"):
    """``(trainer, model)`` for a run folder, kept for this thread while the folder's ``model.json`` stays the
    same; the model predicts on ``device`` ("auto": the GPU when there is one), whatever it trained on."""
    from ..pose import trainers
    from ..pose.run import load_model

    folder = Path(model_dir).absolute()
    try:
        stamp = (folder / "model.json").stat().st_mtime_ns
    except OSError:
        raise AnalyzeError(f"{folder} is not a PoseHub run folder (no model.json)") from None
    key = (str(folder), stamp, device)
    cache = getattr(_local, "models", None)
    if cache is None:
        cache = _local.models = {}
    if key not in cache:
        cache.clear()  # one model per thread
        _deterministic()
        model = load_model(folder)
        if isinstance(model.info.get("params"), dict):
            model.info = {**model.info, "params": {**model.info["params"], "device": device}}
        cache[key] = (trainers.get(model.framework)(), model)
    return cache[key]


def where() -> str:
    """The Dask worker running this (its address), or this host and process."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:
        return None


# ------------------------------------------------------------------ predicting


def predict_range(model_dir, video, start: int, stop: int, batch: int = 16, device: str = "auto",
                  should_stop=None) -> dict:
    """Keypoints and confidences of frames ``start..stop`` of ``video``: ``{"start", "stop", "points"
    (frames, bodyparts, 2), "scores" (frames, bodyparts), "worker", "seconds" (in all), "load_s" (of which
    loading the model: 0 once this thread has it), "device", "threads"}``.
    ``should_stop()`` is asked before each batch; when it says yes, :class:`Cancelled` is raised."""
    start, stop = int(start), int(stop)
    if not 0 <= start < stop:
        raise AnalyzeError(f"video {video}: the range {start}..{stop} is empty or negative")
    t0 = time.perf_counter()
    trainer, model = load(model_dir, device)
    load_s = time.perf_counter() - t0
    k = len(model.bodyparts)
    points = np.full((stop - start, k, 2), np.nan)
    scores = np.zeros((stop - start, k))
    frames = read_frames(video, start, stop)
    try:
        for lo, hi in batches(start, stop, batch):
            if should_stop is not None and should_stop():
                raise Cancelled(f"{video} {start}..{stop}: cancelled at frame {lo}")
            images = [next(frames) for _ in range(hi - lo)]
            p = trainer.predict(model, images)
            points[lo - start:hi - start] = p.points
            scores[lo - start:hi - start] = p.scores
    finally:
        frames.close()
    used = model.info.get("params", {}).get("device", device)
    if used == "auto":
        from ..pose.trainers.base import device as resolve

        used = resolve({"device": "auto"})
    return {"start": start, "stop": stop, "points": points, "scores": scores, "worker": where(),
            "seconds": round(time.perf_counter() - t0, 3), "load_s": round(load_s, 3), "device": used,
            "threads": _threads()}


def predict_video(model_dir, video, batch: int = 16, device: str = "auto") -> dict:
    """Every frame of ``video`` in one pass, in this process: the reference for the chunked analysis."""
    return predict_range(model_dir, video, 0, probe(video), batch, device)
