"""A rough estimate of an ensemble's worker time and cost, shown before it is submitted. Pure.

The model: a member's time is a fixed overhead (worker start, imports,
evaluation, prediction, copying the model) plus the frames it trains on times
the seconds one frame takes per epoch, which depends on the framework, on GPU
or CPU, and on the input size (SLEAP's ``scale``, DeepLabCut's ``crop``). The
rates are round figures, not measurements of your data: pass your own
(``seconds_per_frame_epoch=``) once a run has shown its ``train_frames_per_s``
(``run.json``). Every figure it gives is an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .spec import EnsembleError, check_framework, check_members

# Seconds of training per frame and epoch at the reference input size (SLEAP: full frames, scale 1;
# DeepLabCut: 448 px crops). Rough figures for an open-field-sized frame (640x480).
SECONDS_PER_FRAME_EPOCH = {
    "sleap": {"gpu": 0.008, "cpu": 0.25},
    "dlc": {"gpu": 0.025, "cpu": 1.2},
}
OTHER = {"gpu": 0.02, "cpu": 0.8}  # a plugin trainer with no figure of its own
OVERHEAD_S = 240.0  # per member
DLC_REFERENCE_CROP = 448


@dataclass(frozen=True)
class Estimate:
    framework: str
    members: int
    device: str  # "gpu" or "cpu"
    frame_epochs: float  # frames trained on per member, summed over epochs
    seconds_per_member: float
    worker_hours: float  # all members together
    wall_hours: float  # with ``workers`` members at a time
    price_per_hour: float
    cost: float

    def text(self) -> str:
        money = (f", about ${self.cost:,.2f} at ${self.price_per_hour:,.2f} per worker-hour"
                 if self.price_per_hour else "")
        return (f"Estimate: about {self.worker_hours:.2g} worker-hours ({self.members} member(s) x "
                f"~{self.seconds_per_member / 60:.0f} min on {self.device.upper()}){money}; "
                f"~{self.wall_hours * 60:.0f} min until all finish. A rough model: real runs vary with the data, "
                "the worker and its start-up time, and idle workers are billed too.")

    __str__ = text


def frame_epochs(framework: str, params: dict, n_train_frames: int) -> float:
    """Frames trained on, summed over epochs, scaled to the reference input size."""
    epochs = float(params.get("epochs", 1))
    if framework == "sleap":
        per_epoch = (params["steps_per_epoch"] * params["batch_size"] if params.get("steps_per_epoch")
                     else n_train_frames * (1 - params.get("validation_fraction", 0.0)))
        return epochs * per_epoch * float(params.get("scale", 1.0)) ** 2
    if framework == "dlc":
        return epochs * n_train_frames * (float(params.get("crop", DLC_REFERENCE_CROP)) / DLC_REFERENCE_CROP) ** 2
    return epochs * n_train_frames


def estimate(framework: str, members: int = 3, params: dict | None = None, n_train_frames: int = 93,
             price_per_hour: float = 0.0, gpu: bool = True, workers: int | None = None,
             seconds_per_frame_epoch: float | None = None, overhead_s: float = OVERHEAD_S) -> Estimate:
    """Estimated worker-hours and cost of ``members`` trainings of ``framework`` with ``params`` on
    ``n_train_frames`` frames (open-field: 93), at ``price_per_hour`` per worker, ``workers`` members at a
    time (default: all at once)."""
    fw, p = check_framework(framework, params)
    n = check_members(members)
    if n_train_frames < 1:
        raise EnsembleError(f"n_train_frames must be >= 1, got {n_train_frames}")
    if price_per_hour < 0:
        raise EnsembleError(f"price_per_hour must be >= 0, got {price_per_hour}")
    device = "gpu" if gpu else "cpu"
    rate = seconds_per_frame_epoch
    if rate is None:
        rate = SECONDS_PER_FRAME_EPOCH.get(fw, OTHER)[device]
    fe = frame_epochs(fw, p, int(n_train_frames))
    per = overhead_s + fe * rate
    hours = n * per / 3600
    at_once = min(n, workers or n)
    wall = math.ceil(n / at_once) * per / 3600
    return Estimate(fw, n, device, fe, per, hours, wall, float(price_per_hour), hours * price_per_hour)
