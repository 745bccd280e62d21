"""A rough estimate of a batch analysis's worker time and cost, shown before it starts. Pure.

The model: each chunk costs a fixed overhead (its task starting, the model loading on a worker that has not
loaded it yet) plus its frames times the seconds one frame takes, which depends on the framework and on GPU or
CPU. The rates are round figures for open-field-sized frames (640x480), not measurements of your data: pass
your own (``seconds_per_frame=``) once an analysis has shown its frames per second (its record's timings).
Money is :class:`~decimal.Decimal`, rounded to cents. Every figure it gives is an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from .plan import AnalyzeError

SECONDS_PER_FRAME = {"sleap": {"gpu": 0.002, "cpu": 0.05}, "dlc": {"gpu": 0.004, "cpu": 0.15}}
OTHER = {"gpu": 0.005, "cpu": 0.2}  # a plugin trainer with no figure of its own
OVERHEAD_S = 20.0  # per chunk: the task, the model loading on a new worker
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Estimate:
    framework: str
    videos: int
    frames: int
    chunks: int
    workers: int
    device: str  # "gpu" or "cpu"
    worker_hours: float
    wall_hours: float  # with ``workers`` chunks at a time
    price_per_hour: Decimal
    cost: Decimal

    def text(self) -> str:
        money = (f", about ${self.cost:,.2f} at ${self.price_per_hour:,.2f} per worker-hour"
                 if self.price_per_hour else "")
        return (f"Estimate: {self.frames:,} frames of {self.videos} video(s) in {self.chunks} chunk(s) on "
                f"{self.workers} {self.device.upper()} worker(s): about {self.worker_hours:.2g} worker-hours{money}; "
                f"~{max(1, round(self.wall_hours * 60))} min until all finish. A rough model: real runs vary with "
                "the videos, the model and the workers' start-up, and idle workers are billed too.")

    __str__ = text


def estimate(framework: str, chunk_frames: list[int], price_per_hour=0, gpu: bool = False, workers: int = 1,
             seconds_per_frame: float | None = None, overhead_s: float = OVERHEAD_S, videos: int = 1) -> Estimate:
    """Worker-hours and cost of predicting chunks of ``chunk_frames`` frames each with a ``framework`` model,
    ``workers`` chunks at a time, at ``price_per_hour`` per worker."""
    if not chunk_frames:
        raise AnalyzeError("nothing to analyse: no frames")
    if any(not isinstance(n, int) or n < 0 for n in chunk_frames):
        raise AnalyzeError(f"chunk frame counts must be whole numbers >= 0, got {chunk_frames!r}")
    if not isinstance(workers, int) or workers < 1:
        raise AnalyzeError(f"workers must be a whole number >= 1, got {workers!r}")
    try:
        price = Decimal(str(price_per_hour))
    except ArithmeticError:
        raise AnalyzeError(f"price_per_hour must be a number, got {price_per_hour!r}") from None
    if not price.is_finite() or price < 0:
        raise AnalyzeError(f"price_per_hour must be >= 0, got {price_per_hour!r}")
    device = "gpu" if gpu else "cpu"
    rate = seconds_per_frame if seconds_per_frame is not None else SECONDS_PER_FRAME.get(framework, OTHER)[device]
    if rate < 0 or overhead_s < 0:
        raise AnalyzeError("seconds_per_frame and overhead_s must be >= 0")
    seconds = [overhead_s + n * rate for n in chunk_frames]
    worker_hours = sum(seconds) / 3600
    # chunks handed out in order to whichever worker is free first (longest first would be no different here:
    # all but each video's last chunk are the same length)
    free = [0.0] * min(workers, len(seconds))
    for s in seconds:
        i = free.index(min(free))
        free[i] += s
    wall = max(free) / 3600
    cost = (price * Decimal(str(worker_hours))).quantize(CENT, rounding=ROUND_HALF_UP)
    return Estimate(framework, int(videos), sum(chunk_frames), len(chunk_frames), min(workers, len(seconds)), device,
                    worker_hours, wall, price, cost)


def of_plan(plan, price_per_hour=0, gpu: bool = False, workers: int = 1, **rates) -> Estimate:
    """The estimate of a checked analysis (:func:`posehub.analyze.plan.make_plan`): its readable videos' chunks."""
    parts = [stop - start for v in plan.runnable for start, stop in v.chunks]
    return estimate(plan.framework, parts, price_per_hour, gpu, workers, videos=len(plan.runnable), **rates)
