"""An ensemble as the model of an analysis: every finished member predicts the same frames, and their
consensus is the answer.

The folder an ensemble wrote (``ensemble.json`` beside ``member-<i>/``, see
:func:`posehub.analyze.plan.ensemble_members`) is given as the model; each frame is decoded once and
handed to every member in turn, and the keypoints are combined as the ensemble combines them on video
frames without confidence maps: per body part the confidence-weighted median of the members' points,
scored by their mean confidence (:func:`posehub.ensemble.consensus.from_keypoints`). A member that found
nothing in a frame is left out of that frame's median and counts 0 in its score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ensemble.consensus import from_keypoints


@dataclass
class EnsembleModel:
    """What the analysis needs to know of the model (as of a run's ``trainers.Model``)."""

    framework: str
    path: str
    bodyparts: list[str]
    members: list  # the members' trainers.Model


class EnsemblePredictor:
    """``predictor(frames) -> (points, scores)`` of the members' consensus."""

    def __init__(self, predictors: list):
        if not predictors:
            raise ValueError("an ensemble needs at least one member")
        self.predictors = predictors

    def __call__(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        outs = [p(images) for p in self.predictors]
        c = from_keypoints(np.stack([o[0] for o in outs]), np.stack([o[1] for o in outs]))
        return c.points, c.scores
