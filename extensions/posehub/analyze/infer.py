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

Prediction calls the tool's own inference on the decoded frames in memory,
built once per thread (:class:`SleapPredictor`, :class:`DlcPredictor`),
rather than the trainer's ``predict``: SLEAP's writes each batch to PNG files
for sleap-nn to read back (8 frames/s where sleap-nn alone did 67 on
``bench/analyze.py``'s tiny model), DeepLabCut's builds its runner again for
each batch.
Both mirror their trainer's ``predict`` step for step, so they give the same
points (a test compares them). The next batch is decoded on a second thread
while this one is predicted (:func:`prefetch`), as sleap-nn's own video
reader does: OpenCV decodes without the GIL, so decoding takes no time from
the model.

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
import queue
import socket
import threading
import time
from pathlib import Path

import numpy as np

from .plan import AnalyzeError, batches

_local = threading.local()  # this thread's model: {key: (model, predictor)}


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


def _adaptive_malloc() -> None:
    """Undo, for this process, what Dask's nanny sets for its workers' memory: ``MALLOC_TRIM_THRESHOLD_=65536``
    (freed memory back to the system at once). Setting it stops glibc from adapting its mmap threshold, so
    every allocation over 128 KiB (each batch's frames, scaled, padded; each layer's output) is a new mapping
    whose pages the kernel zeroes again: SLEAP predicted 3 times slower in a worker than in a plain process.
    glibc's own adaptive limits (mmap above 32 MiB, trim above 64 MiB) give the plain process's speed; a
    worker then keeps up to 64 MiB per malloc arena freed but unreturned. Nothing changes where it is unset."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


class SleapPredictor:
    """sleap-nn's ``Predictor`` for a PoseHub SLEAP run, built as ``SleapTrainer.predict`` builds it (the
    same batch size, peak threshold 0 and refinement), fed frames in memory instead of PNG files.

    What the PNG round trip did, done here: sleap-io's video of the PNGs calls a batch grayscale when its
    first frame's first and last channels are equal, and then hands sleap-nn the first channel of every
    frame (``sio.Video``'s grayscale detection); the network sees what it saw. sleap-nn scales, pads to the
    stride, normalises and maps the points back to frame pixels itself in both paths."""

    def __init__(self, model, device: str):
        from sleap_nn.inference.predictor import Predictor

        from ..pose.trainers.sleap import SleapTrainer

        p = model.info["params"]
        self.predictor = Predictor.from_model_paths(
            [str(Path(model.path) / model.info["model_dir"])], device=device, batch_size=p["batch_size"],
            peak_threshold=0.0, integral_refinement=SleapTrainer.refinement)
        self.k = len(model.bodyparts)

    def __call__(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack(images)
        if np.array_equal(x[0, ..., 0], x[0, ..., -1]):
            x = x[..., :1]
        points = np.full((len(x), self.k, 2), np.nan)
        scores = np.zeros((len(x), self.k))
        for out in self.predictor.predict(x, make_labels=False):
            if out.pred_keypoints is None:
                continue
            idx = out.frame_indices.cpu().numpy().astype(int)
            pts = out.pred_keypoints.detach().cpu().numpy()[:, 0]  # (frames, bodyparts, 2): one instance
            vals = np.nan_to_num(out.pred_peak_values.detach().cpu().numpy()[:, 0].astype(float))
            points[idx] = pts
            scores[idx] = np.where(np.isfinite(pts).all(axis=-1), vals, 0.0)
        return points, scores


class DlcPredictor:
    """DeepLabCut's pose inference runner for a PoseHub DeepLabCut run, built as ``DLCTrainer.predict``
    builds it (one individual, the run's batch size), once instead of once per batch."""

    def __init__(self, model, device: str):
        from deeplabcut.pose_estimation_pytorch.apis.utils import get_inference_runners

        root = Path(model.path)
        self.k = len(model.bodyparts)
        self.runner, _ = get_inference_runners(
            model_config=str(root / model.info["pose_config"]), snapshot_path=str(root / model.info["snapshot"]),
            max_individuals=1, num_bodyparts=self.k, num_unique_bodyparts=0,
            batch_size=model.info["params"]["batch_size"], device=device)

    def __call__(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        points = np.full((len(images), self.k, 2), np.nan)
        scores = np.zeros((len(images), self.k))
        for i, r in enumerate(self.runner.inference([np.asarray(im) for im in images])):
            bp = np.asarray(r["bodyparts"])  # (individuals, bodyparts, 3): x, y, score
            if bp.size:
                points[i] = bp[0, :, :2]
                scores[i] = np.nan_to_num(bp[0, :, 2])
        return points, scores


PREDICTORS = {"sleap": SleapPredictor, "dlc": DlcPredictor}


def load(model_dir, device: str = "auto"):
    """``(model, predictor)`` for a run folder, or an ensemble's folder (:mod:`~.members`: its members'
    consensus), kept for this thread while the folder's ``model.json`` (``ensemble.json``) stays the same;
    ``predictor(frames)`` gives ``(points, scores)`` on ``device`` ("auto": the GPU when there is one),
    whatever the model trained on."""
    from ..pose import trainers
    from ..pose.run import load_model
    from ..pose.trainers.base import device as resolve
    from .members import EnsembleModel, EnsemblePredictor
    from .plan import ensemble_members

    folder = Path(model_dir).absolute()
    ensemble = not (folder / "model.json").is_file() and (folder / "ensemble.json").is_file()
    try:
        stamp = (folder / ("ensemble.json" if ensemble else "model.json")).stat().st_mtime_ns
    except OSError:
        raise AnalyzeError(f"{folder} is not a PoseHub run folder (no model.json)") from None
    key = (str(folder), stamp, device)
    cache = getattr(_local, "models", None)
    if cache is None:
        cache = _local.models = {}
    if key not in cache:
        cache.clear()  # one model per thread
        _deterministic()
        _adaptive_malloc()
        where_to = resolve({"device": device})

        def one(path):
            model = load_model(path)
            return model, PREDICTORS[trainers.get(model.framework).name](model, where_to)

        if ensemble:
            members = [one(m) for m in ensemble_members(folder)[0]]
            first = members[0][0]
            cache[key] = (EnsembleModel(first.framework, str(folder), list(first.bodyparts), [m for m, _ in members]),
                          EnsemblePredictor([p for _, p in members]))
        else:
            cache[key] = one(folder)
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


def prefetch(items, ahead: int = 2):
    """``items`` (an iterator) drawn on a second thread, at most ``ahead`` in advance; what it raises is
    raised here. Closing this generator stops the thread at its next item and closes ``items``."""
    q: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    end = object()

    def offer(entry) -> None:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.2)
                return
            except queue.Full:
                continue

    def draw():
        try:
            for item in items:
                offer((item, None))
                if stop.is_set():
                    return
            offer((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            offer((end, e))

    thread = threading.Thread(target=draw, name="posehub-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()
        if hasattr(items, "close"):
            items.close()


def _batches_of_frames(video, start: int, stop: int, batch: int):
    frames = read_frames(video, start, stop)
    try:
        for lo, hi in batches(start, stop, batch):
            yield lo, hi, [next(frames) for _ in range(hi - lo)]
    finally:
        frames.close()


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
    model, predictor = load(model_dir, device)
    load_s = time.perf_counter() - t0
    k = len(model.bodyparts)
    points = np.full((stop - start, k, 2), np.nan)
    scores = np.zeros((stop - start, k))
    decoded = prefetch(_batches_of_frames(video, start, stop, batch))
    try:
        for lo, hi, images in decoded:
            if should_stop is not None and should_stop():
                raise Cancelled(f"{video} {start}..{stop}: cancelled at frame {lo}")
            points[lo - start:hi - start], scores[lo - start:hi - start] = predictor(images)
    finally:
        decoded.close()
    from ..pose.trainers.base import device as resolve

    return {"start": start, "stop": stop, "points": points, "scores": scores, "worker": where(),
            "seconds": round(time.perf_counter() - t0, 3), "load_s": round(load_s, 3),
            "device": resolve({"device": device}), "threads": _threads()}


def predict_video(model_dir, video, batch: int = 16, device: str = "auto") -> dict:
    """Every frame of ``video`` in one pass, in this process: the reference for the chunked analysis."""
    return predict_range(model_dir, video, 0, probe(video), batch, device)
