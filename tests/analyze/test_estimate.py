"""The analysis's cost estimate (pure)."""

from decimal import Decimal

import pytest

from posehub.analyze.estimate import OVERHEAD_S, SECONDS_PER_FRAME, estimate
from posehub.analyze.plan import AnalyzeError, chunks


def test_frames_chunks_workers_and_money():
    parts = [b - a for a, b in chunks(2330, 500)] + [b - a for a, b in chunks(100, 500)]
    e = estimate("sleap", parts, price_per_hour="0.20", workers=2, videos=2)
    assert (e.frames, e.chunks, e.workers, e.videos, e.device) == (2430, 6, 2, 2, "cpu")
    seconds = 6 * OVERHEAD_S + 2430 * SECONDS_PER_FRAME["sleap"]["cpu"]
    assert e.worker_hours == pytest.approx(seconds / 3600)
    assert e.cost == (Decimal("0.20") * Decimal(str(e.worker_hours))).quantize(Decimal("0.01"))
    assert isinstance(e.cost, Decimal)
    assert e.wall_hours < e.worker_hours  # two at a time
    assert "2,430 frames of 2 video(s) in 6 chunk(s) on 2 CPU worker(s)" in e.text()
    assert "$0.20 per worker-hour" in e.text()


def test_more_workers_than_chunks_and_gpu_rates():
    e = estimate("dlc", [100], gpu=True, workers=8)
    assert e.workers == 1 and e.device == "gpu" and e.cost == Decimal("0.00")
    assert estimate("dlc", [1000], gpu=True).worker_hours < estimate("dlc", [1000]).worker_hours
    assert estimate("sleap", [1000], seconds_per_frame=1.0).worker_hours == pytest.approx((OVERHEAD_S + 1000) / 3600)


@pytest.mark.parametrize("kwargs, message", [
    (dict(chunk_frames=[]), "nothing to analyse"),
    (dict(chunk_frames=[10, -1]), "whole numbers >= 0"),
    (dict(chunk_frames=[10], workers=0), "workers must be"),
    (dict(chunk_frames=[10], price_per_hour="lots"), "price_per_hour must be a number"),
    (dict(chunk_frames=[10], price_per_hour=-1), "price_per_hour must be >= 0"),
])
def test_bad_input_is_refused(kwargs, message):
    with pytest.raises(AnalyzeError, match=message):
        estimate("sleap", **kwargs)


def test_estimate_of_a_checked_plan():
    from types import SimpleNamespace

    from posehub.analyze.estimate import of_plan

    videos = [SimpleNamespace(chunks=chunks(90, 24)), SimpleNamespace(chunks=chunks(60, 24))]
    plan = SimpleNamespace(framework="sleap", runnable=videos)
    e = of_plan(plan, price_per_hour=1, workers=2)
    assert (e.frames, e.chunks, e.videos, e.workers) == (150, 7, 2, 2)
