"""The interface every trainer implements: train, predict, evaluate.

A trainer turns :class:`~posehub.pose.labels.Labels` and a
:class:`~posehub.pose.split.Split` into a :class:`Model` (a folder with the
tool's own files plus ``run.json``), predicts keypoints and confidences for
images, and evaluates on the split's test frames with the pixel metrics of
:mod:`posehub.pose.metrics`. Only ``train`` and ``predict`` are tool-specific.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import metrics
from ..labels import Labels
from ..split import Split


class TrainerError(RuntimeError):
    """Training that cannot run as asked; the message says why."""


@dataclass
class Model:
    framework: str
    path: Path  # the run folder: the tool's files, run.json, split.json
    bodyparts: list[str]
    info: dict = field(default_factory=dict)


@dataclass
class Prediction:
    points: np.ndarray  # (frames, bodyparts, 2) pixels, NaN where nothing was found
    scores: np.ndarray  # (frames, bodyparts) confidence in [0, 1]
    confmaps: np.ndarray | None = None  # (frames, bodyparts, H, W) where the tool exposes them
    stride: float = 1.0  # pixels of the image per confidence-map cell


def device(params: dict) -> str:
    """The torch device of ``params["device"]``: "auto" is cuda when a GPU is visible, else cpu."""
    if params["device"] != "auto":
        return params["device"]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


Progress = Callable[[dict], None]  # {"epoch": i, "epochs": n, "loss": x, ...}


class Trainer:
    """Subclass and implement ``train`` and ``predict``; ``defaults`` lists the parameters and their
    CI-sized values; ``full`` the values a user runs on a GPU.

    A numeric parameter must be > 0 unless its default is 0 (then >= 0) or it is named in
    ``may_be_zero``. Set ``confmaps = True`` on an instance to have ``predict`` (and ``predict_frames``)
    return the confidence maps where the tool exposes them: they take frames x bodyparts x H x W floats,
    so they are left out unless asked for."""

    name = "base"
    defaults: dict = {}
    full: dict = {}
    may_be_zero: frozenset[str] = frozenset()  # numeric parameters that may be 0 although their default is not
    confmaps: bool = False  # predict also returns the confidence maps (where the tool has them)

    def params(self, given: dict | None = None) -> dict:
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise TrainerError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(self.defaults))}")
        p = {**self.defaults, **given}
        for key, value in p.items():
            default = self.defaults[key]
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TrainerError(f"{self.name}: {key} must be a number, got {value!r}")
                zero_ok = default == 0 or key in self.may_be_zero
                if value < 0 or (value == 0 and not zero_ok):
                    raise TrainerError(f"{self.name}: {key} must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")
        self.check(p)
        return p

    def check(self, p: dict) -> None:
        """Tool-specific checks of the parameters; raise TrainerError."""

    def train(self, labels: Labels, split: Split, workdir: Path, params: dict | None = None, seed: int = 0,
              progress: Progress | None = None) -> Model:
        raise NotImplementedError

    def predict(self, model: Model, images: list[np.ndarray]) -> Prediction:
        """Keypoints and confidences for ``images``; with the confidence maps too where ``self.confmaps``
        is set and the tool exposes them."""
        raise NotImplementedError

    def predict_frames(self, model: Model, labels: Labels, indices, batch: int = 16) -> Prediction:
        out = []
        idx = list(indices)
        for i in range(0, len(idx), batch):
            out.append(self.predict(model, [labels.read_image(j) for j in idx[i:i + batch]]))
        cm = [p.confmaps for p in out]
        return Prediction(np.concatenate([p.points for p in out]), np.concatenate([p.scores for p in out]),
                          np.concatenate(cm) if all(c is not None for c in cm) else None, out[0].stride)

    def evaluate(self, model: Model, labels: Labels, split: Split) -> dict:
        """Mean and RMSE pixel error on the test frames, per body part and overall; written to
        ``metrics.json`` beside the model."""
        t0 = time.perf_counter()
        pred = self.predict_frames(model, labels, split.test)
        result = metrics.evaluate(pred.points, labels.points[list(split.test)], labels.bodyparts)
        result["test_frames"] = len(split.test)
        result["predict_s"] = time.perf_counter() - t0
        (Path(model.path) / "metrics.json").write_text(json.dumps(result, indent=1))
        return result
