"""One consensus track from several models' predictions, and where the models disagree. Pure numpy.

Two ways to combine the members' outputs for a frame:

* **confidence maps** (where the framework exposes them, all the same shape):
  average the maps, take each body part's peak, refine it to sub-pixel by a
  parabola through the peak and its neighbours, and scale by the map's stride
  (image pixels per map cell). The score is the averaged map's peak value.
* **keypoints** otherwise: per body part, the confidence-weighted median of the
  members' x and of their y (members that found nothing are left out). The
  score is the members' mean confidence, a missing keypoint counting 0.

The disagreement of a frame is the mean over body parts of the members' mean
distance to the consensus, each distance capped at ``cap_px``; a keypoint a
member (or the consensus) is missing counts as ``cap_px``, the most there is.
The frames with the highest scores are the ones to label next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Consensus:
    points: np.ndarray  # (frames, bodyparts, 2) pixels, NaN where no member found the body part
    scores: np.ndarray  # (frames, bodyparts) in [0, 1]
    method: str  # "confmaps" or "keypoints"


def refine_peaks(maps: np.ndarray, stride: float = 1.0, min_peak: float = 0.0):
    """Peaks of ``maps`` (..., H, W): ``(points (..., 2) in pixels, values (...))``. Sub-pixel by a parabola
    through the peak and its two neighbours along x and along y (offset within half a cell); NaN where the
    peak is not above ``min_peak``."""
    maps = np.asarray(maps, dtype=float)
    lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
    flat = np.nan_to_num(maps.reshape(-1, h, w), nan=-np.inf)
    n = flat.shape[0]
    best = flat.reshape(n, -1).argmax(axis=1)
    row, col = np.divmod(best, w)
    i = np.arange(n)
    value = flat[i, row, col]

    def offset(lo, mid, hi, ok):
        denom = lo - 2 * mid + hi
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(ok & (denom < 0) & np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo - hi) / denom, 0.0)
        return np.clip(np.nan_to_num(d), -0.5, 0.5)

    left = flat[i, row, np.maximum(col - 1, 0)]
    right = flat[i, row, np.minimum(col + 1, w - 1)]
    up = flat[i, np.maximum(row - 1, 0), col]
    down = flat[i, np.minimum(row + 1, h - 1), col]
    dx = offset(left, value, right, (col > 0) & (col < w - 1))
    dy = offset(up, value, down, (row > 0) & (row < h - 1))
    pts = np.stack([(col + dx) * stride, (row + dy) * stride], axis=-1)
    missing = ~(value > min_peak)
    pts[missing] = np.nan
    value = np.where(missing, 0.0, value)
    return pts.reshape(*lead, 2), value.reshape(lead)


def from_confmaps(confmaps, stride: float = 1.0, min_peak: float = 0.0) -> Consensus:
    """Average the members' maps ``(members, frames, bodyparts, H, W)`` and take each peak."""
    shapes = {np.shape(c) for c in confmaps}
    if len(shapes) != 1:
        raise ValueError(f"members' confidence maps differ in shape: {sorted(shapes)}")
    mean = np.nanmean(np.stack([np.asarray(c, dtype=float) for c in confmaps]), axis=0)
    pts, val = refine_peaks(mean, stride, min_peak)
    return Consensus(pts, np.clip(val, 0.0, 1.0), "confmaps")


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of ``values`` where each counts ``weights``; NaN values and zero weights are left out. Where
    the cumulative weight reaches exactly half, the mean of the two middle values (the plain median
    for equal weights)."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    keep = np.isfinite(v) & np.isfinite(w) & (w > 0)
    v, w = v[keep], w[keep]
    if not v.size:
        return float("nan")
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cum = np.cumsum(w)
    half = cum[-1] / 2
    k = int(np.searchsorted(cum, half - 1e-12 * cum[-1]))
    if abs(cum[k] - half) <= 1e-9 * cum[-1] and k + 1 < v.size:
        return float((v[k] + v[k + 1]) / 2)
    return float(v[k])


def from_keypoints(points, scores) -> Consensus:
    """Confidence-weighted median of the members' keypoints ``(members, frames, bodyparts, 2)`` with
    ``scores`` ``(members, frames, bodyparts)``. Where the members that found a body part all have
    zero confidence, they count equally."""
    pts = np.asarray(points, dtype=float)
    sc = np.nan_to_num(np.asarray(scores, dtype=float)).clip(0, None)
    if pts.ndim != 4 or pts.shape[-1] != 2 or sc.shape != pts.shape[:-1]:
        raise ValueError(f"points {pts.shape} must be (members, frames, bodyparts, 2) and scores {sc.shape} "
                         "(members, frames, bodyparts)")
    m, n, k = sc.shape
    present = np.isfinite(pts).all(axis=-1)
    w = np.where(present, sc, 0.0)
    none = (w.sum(axis=0) == 0) & present.any(axis=0)
    w = np.where(none[None] & present, 1.0, w)
    out = np.full((n, k, 2), np.nan)
    for f in range(n):
        for j in range(k):
            if present[:, f, j].any():
                for c in range(2):
                    out[f, j, c] = weighted_median(np.where(present[:, f, j], pts[:, f, j, c], np.nan), w[:, f, j])
    return Consensus(out, np.where(present, sc, 0.0).mean(axis=0).clip(0, 1), "keypoints")


def combine(predictions: list[dict]) -> Consensus:
    """The consensus of members' predictions, each ``{"points", "scores", "confmaps" (or None), "stride"}``:
    from confidence maps when every member has them with the same shape and stride, else from keypoints."""
    if not predictions:
        raise ValueError("no member predictions to combine")
    cms = [p.get("confmaps") for p in predictions]
    strides = {float(p.get("stride", 1.0)) for p in predictions}
    if all(c is not None for c in cms) and len({np.shape(c) for c in cms}) == 1 and len(strides) == 1:
        return from_confmaps(cms, strides.pop())
    return from_keypoints(np.stack([p["points"] for p in predictions]), np.stack([p["scores"] for p in predictions]))


def disagreement(points, consensus, cap_px: float) -> np.ndarray:
    """Per frame: mean over body parts of the members' mean distance (px) to the consensus, each capped at
    ``cap_px``; a keypoint missing from a member or from the consensus counts ``cap_px``."""
    pts = np.asarray(points, dtype=float)  # (members, frames, bodyparts, 2)
    cons = np.asarray(consensus, dtype=float)  # (frames, bodyparts, 2)
    if pts.shape[1:] != cons.shape:
        raise ValueError(f"member points {pts.shape} and consensus {cons.shape} do not match")
    d = np.sqrt(((pts - cons[None]) ** 2).sum(axis=-1))
    d = np.where(np.isfinite(d), np.minimum(d, cap_px), cap_px)
    return d.mean(axis=(0, 2))


def rank(scores, sources, frames, names=None) -> list[dict]:
    """Frames ranked by disagreement, highest first: ``{"rank", "score_px", "source", "frame", "name"}``."""
    scores = np.asarray(scores, dtype=float)
    names = list(names) if names is not None else [""] * len(scores)
    if not len(scores) == len(sources) == len(frames) == len(names):
        raise ValueError("scores, sources, frames and names must have the same length")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], str(sources[i]), int(frames[i])))
    return [{"rank": r + 1, "score_px": float(scores[i]), "source": str(sources[i]), "frame": int(frames[i]),
             "name": str(names[i])} for r, i in enumerate(order)]
