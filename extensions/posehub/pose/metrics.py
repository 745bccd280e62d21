"""Test error in pixels: the metric of the SLEAP vs DeepLabCut comparison.

For each test frame and body part that is labelled, the error is the
Euclidean distance between the predicted and the labelled keypoint. Reported
per body part and over all: the mean (what the study reports: SLEAP 1.96 px,
DLC 3.44 px on open-field) and the RMSE. A keypoint the model did not predict
(NaN) counts as missed, not as an error of zero.
"""

from __future__ import annotations

import math

import numpy as np


def pixel_errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(frames, bodyparts) distances; NaN where the truth is not labelled or nothing was predicted."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if pred.shape != truth.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"predictions {pred.shape} and labels {truth.shape} must both be (frames, bodyparts, 2)")
    return np.sqrt(((pred - truth) ** 2).sum(axis=-1))


def _summary(d: np.ndarray, labelled: np.ndarray) -> dict:
    ok = d[~np.isnan(d)]
    n_lab = int(labelled.sum())
    return {
        "mean_px": float(ok.mean()) if ok.size else math.nan,
        "rmse_px": float(np.sqrt((ok ** 2).mean())) if ok.size else math.nan,
        "median_px": float(np.median(ok)) if ok.size else math.nan,
        "n": int(ok.size),
        "missed": n_lab - int(ok.size),
    }


def evaluate(pred: np.ndarray, truth: np.ndarray, bodyparts: list[str]) -> dict:
    """``{"all": {...}, "per_bodypart": {name: {...}}}`` with mean_px, rmse_px, median_px, n, missed."""
    d = pixel_errors(pred, truth)
    labelled = ~np.isnan(np.asarray(truth, float)).any(axis=-1)
    return {
        "all": _summary(d, labelled),
        "per_bodypart": {bp: _summary(d[:, j], labelled[:, j]) for j, bp in enumerate(bodyparts)},
    }


def table(results: dict[str, dict], bodyparts: list[str]) -> list[dict]:
    """Rows for a comparison table: one per model, mean error per body part and overall."""
    rows = []
    for name, r in results.items():
        row = {"model": name, "mean_px": r["all"]["mean_px"], "rmse_px": r["all"]["rmse_px"]}
        for bp in bodyparts:
            row[bp] = r["per_bodypart"][bp]["mean_px"]
        rows.append(row)
    return rows
