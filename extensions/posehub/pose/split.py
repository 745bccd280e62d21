"""A deterministic train/test split, saved with the results.

The same labels, fraction and seed always give the same split, on any machine
(numpy's PCG64 permutation of the frame indices). The split is written beside
each training run as ``split.json`` so that a result can be checked against
exactly the frames it was tested on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from .labels import Labels, LabelsError


@dataclass(frozen=True)
class Split:
    train: tuple[int, ...]
    test: tuple[int, ...]
    train_fraction: float
    seed: int
    train_frames: tuple[str, ...] = ()
    test_frames: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Split:
        d = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def split(labels: Labels, train_fraction: float = 0.8, seed: int = 0) -> Split:
    """Shuffle the frame indices with ``seed``; the first ``round(n * train_fraction)`` train, the rest test.
    Both sides get at least one frame."""
    n = len(labels)
    if not 0 < train_fraction < 1:
        raise LabelsError(f"train_fraction must be between 0 and 1 (exclusive), got {train_fraction}")
    if n < 2:
        raise LabelsError(f"{labels.source or 'labels'}: {n} labelled frame(s); a train/test split needs at least 2")
    order = np.random.default_rng(int(seed)).permutation(n)
    k = min(max(int(round(n * train_fraction)), 1), n - 1)
    train, test = sorted(int(i) for i in order[:k]), sorted(int(i) for i in order[k:])
    return Split(tuple(train), tuple(test), float(train_fraction), int(seed),
                 tuple(labels.frames[i] for i in train), tuple(labels.frames[i] for i in test))
