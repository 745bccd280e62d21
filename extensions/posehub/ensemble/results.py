"""An ensemble's results: members' and consensus test errors, the consensus track, frames to label next.

:func:`build` is pure: it takes what the members returned (their metrics and
predictions on the test frames and the sampled video frames) and makes an
:class:`EnsembleResult`. :func:`write` puts it under the ensemble's folder:

* ``ensemble.json``: the spec, seeds, split, each member's status, attempts,
  metrics and model URL, the consensus's method and metrics;
* ``split.json``: the split every member was trained and tested on;
* ``consensus.csv``: per frame (test and video), each body part's x, y, score;
* ``label_next.csv``: frames ranked by how much the members disagree.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..pose import metrics as pose_metrics
from ..pose.labels import join
from ..pose.split import Split
from . import consensus as cons

FILES = ("ensemble.json", "split.json", "consensus.csv", "label_next.csv")


@dataclass
class MemberResult:
    index: int
    seed: int
    status: str  # done, failed, cancelled
    attempts: int = 0
    worker: str = ""
    url: str = ""
    metrics: dict = field(default_factory=dict)
    error: str = ""
    train_s: float | None = None

    @property
    def mean_px(self) -> float:
        return float(self.metrics.get("all", {}).get("mean_px", math.nan))

    @property
    def rmse_px(self) -> float:
        return float(self.metrics.get("all", {}).get("rmse_px", math.nan))


@dataclass
class EnsembleResult:
    id: str
    framework: str
    dest: str
    spec: dict
    split: Split
    bodyparts: list[str]
    members: list[MemberResult]
    method: str = ""  # "confmaps" or "keypoints"; "" when no member finished
    consensus_metrics: dict = field(default_factory=dict)
    test: cons.Consensus | None = None  # on the split's test frames
    video: cons.Consensus | None = None  # on the sampled video frames
    video_frames: list[int] = field(default_factory=list)
    label_next: list[dict] = field(default_factory=list)  # ranked, most disagreement first
    files: dict[str, str] = field(default_factory=dict)  # name -> where it was written

    @property
    def succeeded(self) -> list[MemberResult]:
        return [m for m in self.members if m.status == "done"]

    def table(self):
        """Members and the consensus: mean and RMSE test error in pixels, status, seed (a pandas DataFrame)."""
        import pandas as pd

        rows = {f"member {m.index}": {"mean px": m.mean_px, "RMSE px": m.rmse_px, "status": m.status, "seed": m.seed}
                for m in self.members}
        c = self.consensus_metrics.get("all", {})
        rows["consensus"] = {"mean px": c.get("mean_px", math.nan), "RMSE px": c.get("rmse_px", math.nan),
                             "status": "done" if self.test is not None else "unavailable", "seed": None}
        df = pd.DataFrame.from_dict(rows, orient="index")[["mean px", "RMSE px", "status", "seed"]]
        return df.astype({"mean px": float, "RMSE px": float, "seed": "Int64"})

    def label_next_project(self, tool: str | None = None, out=None, top: int = 20, **kwargs):
        """The frames to label next as a SLEAP or DeepLabCut project, for the tool that trained the ensemble
        unless ``tool`` says otherwise; where it was written (:func:`posehub.pose.labelling.label_next_project`)."""
        from ..pose.labelling import label_next_project

        return label_next_project(self, tool, out, top, **kwargs)

    def to_json(self) -> dict:
        return finite_json({
            "id": self.id, "framework": self.framework, "dest": self.dest,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "spec": self.spec, "seeds": [m.seed for m in self.members], "split": asdict(self.split),
            "members": [asdict(m) for m in self.members],
            "consensus": {"method": self.method, "members": len(self.succeeded),
                          "metrics": self.consensus_metrics, "test_frames": len(self.split.test),
                          "video_frames": self.video_frames},
            "label_next": self.label_next[:20],
            "files": self.files,
        })


def finite_json(x):
    """NaN and infinities as null (numpy scalars as Python numbers): ``ensemble.json``, and analysis records,
    stay strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_json(v) for v in x]
    if isinstance(x, np.generic):
        return finite_json(x.item())
    return x


def _prediction(p: dict, prefix: str) -> dict:
    return {"points": p[f"{prefix}_points"], "scores": p[f"{prefix}_scores"],
            "confmaps": p.get(f"{prefix}_confmaps"), "stride": float(p.get(f"{prefix}_stride", p.get("stride", 1.0)))}


def build(spec, outcomes: list[dict]) -> EnsembleResult:
    """The result of an ensemble from its spec and each member's outcome: ``{"status", "seed",
    "attempts", "worker", "url", "metrics", "error", "train_s", "predictions"}`` (predictions: the arrays
    of the member's ``predictions.npz``, for members that are done)."""
    labels = spec.labels
    members = [MemberResult(i, int(o.get("seed", spec.seeds[i])), o["status"], int(o.get("attempts", 0)),
                            o.get("worker", ""), o.get("url", ""), o.get("metrics") or {}, o.get("error", ""),
                            o.get("train_s")) for i, o in enumerate(outcomes)]
    out = EnsembleResult(spec.id, spec.framework, spec.dest, spec.describe(), spec.split, list(labels.bodyparts),
                         members)
    preds = [o["predictions"] for o in outcomes if o["status"] == "done" and o.get("predictions") is not None]
    if not preds:
        return out
    test_idx = list(spec.split.test)
    h, w = spec.image_shape if any(spec.image_shape) else tuple(preds[0].get("image_shape", (0, 0)))
    cap = float(math.hypot(h, w)) or 1000.0
    out.test = cons.combine([_prediction(p, "test") for p in preds])
    out.method = out.test.method
    out.consensus_metrics = pose_metrics.evaluate(out.test.points, labels.points[test_idx], labels.bodyparts)
    scores = list(cons.disagreement(np.stack([p["test_points"] for p in preds]), out.test.points, cap))
    sources, frames, names = ["test"] * len(test_idx), list(test_idx), [labels.frames[i] for i in test_idx]
    video_sets = [tuple(p.get("video_frames", ())) for p in preds]
    if spec.video and len(set(video_sets)) == 1 and video_sets[0] and all("video_points" in p for p in preds):
        out.video_frames = [int(i) for i in video_sets[0]]
        out.video = cons.combine([_prediction(p, "video") for p in preds])
        scores += list(cons.disagreement(np.stack([p["video_points"] for p in preds]), out.video.points, cap))
        sources += ["video"] * len(out.video_frames)
        frames += out.video_frames
        names += [spec.video] * len(out.video_frames)
    out.label_next = cons.rank(scores, sources, frames, names)
    return out


def consensus_csv(result: EnsembleResult) -> str:
    """One row per frame (test frames, then video frames): source, frame, name, then x, y, score of
    each body part."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["source", "frame", "name"] + [f"{bp}_{c}" for bp in result.bodyparts for c in ("x", "y", "score")])
    names = {(r["source"], r["frame"]): r["name"] for r in result.label_next}  # every frame is ranked
    parts = (("test", list(result.split.test), result.test), ("video", result.video_frames, result.video))
    for source, idx, c in parts:
        if c is None:
            continue
        for row, frame in enumerate(idx):
            vals = []
            for j in range(len(result.bodyparts)):
                x, y = c.points[row, j]
                vals += ["" if np.isnan(x) else f"{x:.3f}", "" if np.isnan(y) else f"{y:.3f}",
                         f"{c.scores[row, j]:.4f}"]
            w.writerow([source, frame, names.get((source, frame), "")] + vals)
    return buf.getvalue()


def label_next_csv(result: EnsembleResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "score_px", "source", "frame", "name"])
    for r in result.label_next:
        w.writerow([r["rank"], f"{r['score_px']:.3f}", r["source"], r["frame"], r["name"]])
    return buf.getvalue()


def put(dest: str, name: str, data: bytes, fs=None) -> str:
    """Write ``data`` as ``dest/name``: a local folder, or a bucket URL through ``fs``."""
    if fs is None and "://" not in dest:
        path = Path(dest) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)
    if fs is None:
        import fsspec

        fs = fsspec.core.url_to_fs(dest)[0]
    target = join(dest, name)
    try:
        fs.makedirs(dest, exist_ok=True)
    except (OSError, NotImplementedError):
        pass  # object stores have no folders
    fs.pipe_file(target, data)
    return target


def write(result: EnsembleResult, fs=None) -> dict[str, str]:
    """Write the result's files under ``result.dest``; their locations (also set as ``result.files``)."""
    files = {}
    if result.test is not None:
        files["consensus.csv"] = put(result.dest, "consensus.csv", consensus_csv(result).encode(), fs)
        files["label_next.csv"] = put(result.dest, "label_next.csv", label_next_csv(result).encode(), fs)
    files["split.json"] = put(result.dest, "split.json", result.split.to_json().encode(), fs)
    files["ensemble.json"] = join(result.dest, "ensemble.json")
    result.files = files
    put(result.dest, "ensemble.json", json.dumps(result.to_json(), indent=1).encode(), fs)
    return files
