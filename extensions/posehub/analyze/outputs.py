"""One video's joined predictions as files: PoseHub's CSV, DeepLabCut's and SLEAP's formats, the record.

* ``<stem>.posehub.csv``: one row per frame and body part: frame, bodypart, x, y, confidence;
* ``<stem>DLC_posehub.h5`` and ``.csv`` (DeepLabCut models): the DataFrame DeepLabCut's
  ``analyze_videos`` writes (columns scorer / bodyparts / coords x, y, likelihood; key
  ``df_with_missing``), so DeepLabCut's own tools (``load_analyzed_data``, labelled videos,
  filtering) read it;
* ``<stem>.predictions.slp`` (SLEAP models): a SLEAP labels file of predicted instances, one per frame
  where the model found a body part, pointing at the video;
* ``<stem>.overlay.mp4`` (``overlay=True``): the video with each body part drawn where the model put it
  (a filled dot; a ring where its confidence is below the low-confidence threshold), H.264;
* ``<stem>.analysis.json``: the record: the model folder and its own ``run.json``, the environment,
  the parameters, the video's SHA-256, each chunk's range, worker, attempts and time, frames, mean
  confidence and the share of low-confidence frames.

The builders (:func:`summarize`, :func:`posehub_csv`, :func:`dlc_frame`, :func:`record`) are pure;
:func:`write` puts the files where the plan says (a folder, or a bucket URL through fsspec, with
:func:`posehub.ensemble.results.put`). ``.h5`` and ``.slp`` need pandas with PyTables and sleap-io (the
pose image).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..ensemble.results import finite_json, put
from .plan import DLC_SCORER, Plan, VideoPlan

LOW_CONFIDENCE_RULE = "a frame whose mean confidence over the body parts is below the threshold"


@dataclass
class VideoResult:
    video: str
    status: str  # done, failed, cancelled
    error: str = ""
    frames: int = 0
    mean_confidence: float = math.nan
    low_confidence_share: float = math.nan
    files: dict[str, str] = field(default_factory=dict)  # kind -> where it was written
    chunks: list[dict] = field(default_factory=list)  # start, stop, worker, attempts, seconds
    points: np.ndarray | None = field(default=None, repr=False)  # (frames, bodyparts, 2)
    scores: np.ndarray | None = field(default=None, repr=False)  # (frames, bodyparts)

    @property
    def workers(self) -> list[str]:
        return sorted({c["worker"] for c in self.chunks if c.get("worker")})


def summarize(scores: np.ndarray, threshold: float) -> dict:
    """Mean confidence over every frame and body part, and the frames of low confidence (see
    :data:`LOW_CONFIDENCE_RULE`): their number and share."""
    s = np.nan_to_num(np.asarray(scores, dtype=float))
    n = len(s)
    per_frame = s.mean(axis=1) if n and s.ndim == 2 and s.shape[1] else np.zeros(n)
    low = int((per_frame < threshold).sum())
    return {"frames": n, "mean_confidence": float(s.mean()) if s.size else math.nan,
            "low_confidence_frames": low, "low_confidence_share": low / n if n else math.nan,
            "low_confidence_threshold": float(threshold)}


def _num(v: float, digits: int) -> str:
    return "" if not np.isfinite(v) else f"{v:.{digits}f}"


def posehub_csv(points: np.ndarray, scores: np.ndarray, bodyparts: list[str]) -> str:
    """One row per frame and body part: frame, bodypart, x, y (pixels, 3 decimals; empty where the model
    found nothing), confidence (5 decimals)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["frame", "bodypart", "x", "y", "confidence"])
    for i in range(len(points)):
        for j, bp in enumerate(bodyparts):
            x, y = points[i, j]
            w.writerow([i, bp, _num(x, 3), _num(y, 3), _num(scores[i, j], 5)])
    return buf.getvalue()


def dlc_frame(points: np.ndarray, scores: np.ndarray, bodyparts: list[str], scorer: str = DLC_SCORER):
    """DeepLabCut's single-animal DataFrame: index the frame numbers, columns (scorer, bodyparts, coords)
    with coords x, y, likelihood (as ``create_df_from_prediction`` in DeepLabCut's ``analyze_videos``)."""
    import pandas as pd

    n, k = len(points), len(bodyparts)
    values = np.concatenate([np.asarray(points, dtype=float), np.asarray(scores, dtype=float)[..., None]], axis=-1)
    columns = pd.MultiIndex.from_product([[scorer], list(bodyparts), ["x", "y", "likelihood"]],
                                         names=["scorer", "bodyparts", "coords"])
    return pd.DataFrame(values.reshape(n, k * 3), columns=columns, index=range(n))


def sleap_labels(points: np.ndarray, scores: np.ndarray, bodyparts: list[str], video: str):
    """A ``sleap_io.Labels``: the video (by its path), a skeleton of the body parts and, on each frame
    where any body part was found, a predicted instance with its points' scores; the instance's score is
    the mean over its body parts."""
    import sleap_io as sio

    skeleton = sio.Skeleton(list(bodyparts))
    vid = sio.Video.from_filename(str(video))
    frames = []
    for i in range(len(points)):
        if not np.isfinite(points[i]).any():
            continue
        inst = sio.PredictedInstance.from_numpy(np.asarray(points[i], dtype=float), skeleton=skeleton,
                                                point_scores=np.asarray(scores[i], dtype=float),
                                                score=float(np.nan_to_num(scores[i]).mean()))
        frames.append(sio.LabeledFrame(video=vid, frame_idx=i, instances=[inst]))
    return sio.Labels(labeled_frames=frames, videos=[vid], skeletons=[skeleton])


def record(plan: Plan, video: VideoPlan, chunks: list[dict], summary: dict, sha256: str, files: dict,
           environment: dict) -> dict:
    """The analysis record of one video (pure: give it the hash and the environment)."""
    return finite_json({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "analysis": plan.id,
        "video": {"path": video.path, "sha256": sha256, "frames": video.frames},
        "model": {"folder": plan.model_dir, "framework": plan.framework, "bodyparts": plan.bodyparts,
                  "run": plan.model_record},
        "environment": environment,
        "parameters": plan.params,
        "chunks": [{k: c.get(k) for k in ("start", "stop", "worker", "attempts", "seconds", "load_s", "device",
                                                     "threads")}
                   for c in sorted(chunks, key=lambda c: c["start"])],
        "workers": sorted({c["worker"] for c in chunks if c.get("worker")}),
        "predict_s": round(sum(c.get("seconds") or 0 for c in chunks), 3),
        "frames": summary["frames"],
        "mean_confidence": summary["mean_confidence"],
        "low_confidence": {"threshold": summary["low_confidence_threshold"], "rule": LOW_CONFIDENCE_RULE,
                           "frames": summary["low_confidence_frames"], "share": summary["low_confidence_share"]},
        "files": files,
    })


COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
          (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]  # RGB, one per body part


def draw(frame: np.ndarray, points: np.ndarray, scores: np.ndarray, threshold: float, radius: int = 4) -> np.ndarray:
    """``frame`` (RGB) with each body part's point: a filled dot, a ring when its score is below ``threshold``."""
    import cv2

    out = np.ascontiguousarray(frame)
    for j, ((x, y), s) in enumerate(zip(points, scores)):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(out, (int(round(x)), int(round(y))), radius, COLORS[j % len(COLORS)],
                       -1 if s >= threshold else 1, lineType=cv2.LINE_AA)
    return out


def overlay_video(src: str, points: np.ndarray, scores: np.ndarray, dest: str, threshold: float) -> int:
    """Write ``src`` with the points drawn on its frames to ``dest`` (H.264 .mp4, the source's frame rate);
    the number of frames written."""
    import cv2
    import imageio.v2 as iio

    cap = cv2.VideoCapture(src)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = iio.get_writer(dest, fps=fps, codec="libx264", quality=7, macro_block_size=1)
    n = 0
    try:
        while n < len(points):
            ok, frame = cap.read()
            if not ok:
                break
            writer.append_data(draw(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), points[n], scores[n], threshold))
            n += 1
    finally:
        writer.close()
        cap.release()
    return n


def _via_file(suffix: str, make) -> bytes:
    """The bytes of a file that a library writes only to a path (``make(path)``)."""
    with tempfile.TemporaryDirectory(prefix="posehub-analyze-") as tmp:
        path = os.path.join(tmp, "out" + suffix)
        make(path)
        return Path(path).read_bytes()


def write(plan: Plan, video: VideoPlan, points: np.ndarray, scores: np.ndarray, chunks: list[dict]) -> VideoResult:
    """Write one video's files (the kinds in ``video.files``) and return its result; the record last, so a
    video with a record has all its files."""
    from ..pose.record import environment, file_sha256

    fs = plan.out_fs
    bodyparts = plan.bodyparts
    summary = summarize(scores, plan.params["low_confidence"])
    written: dict[str, str] = {}

    def put_kind(kind: str, data: bytes) -> None:
        written[kind] = put(video.dest, video.files[kind].rsplit("/", 1)[-1], data, fs)

    put_kind("csv", posehub_csv(points, scores, bodyparts).encode())
    if "dlc_h5" in video.files:
        df = dlc_frame(points, scores, bodyparts)
        put_kind("dlc_h5", _via_file(".h5", lambda p: df.to_hdf(p, key="df_with_missing", format="table", mode="w")))
        put_kind("dlc_csv", df.to_csv().encode())
    if "slp" in video.files:
        labels = sleap_labels(points, scores, bodyparts, video.path)
        put_kind("slp", _via_file(".slp", lambda p: labels.save(p, verbose=False)))
    if "overlay" in video.files:
        threshold = plan.params["low_confidence"]
        put_kind("overlay", _via_file(".mp4", lambda p: overlay_video(video.path, points, scores, p, threshold)))
    sha = file_sha256(video.path, lambda p, m: open(p, m))
    files = {**written, "record": video.files["record"]}
    rec = record(plan, video, chunks, summary, sha, files, environment())
    put_kind("record", json.dumps(rec, indent=1, default=str).encode())
    return VideoResult(video.path, "done", "", summary["frames"], summary["mean_confidence"],
                       summary["low_confidence_share"], written, list(rec["chunks"]), points, scores)
