"""The Dask task of one chunk: predict a range of one video's frames in the worker's own process.

Unlike an ensemble member (a training of minutes to hours, in a child
process it can kill), a chunk is a few hundred frames: seconds to a minute.
So it runs in the worker's process, with the model loaded once per task
thread and kept for the next chunks (a child process per chunk would import
torch and load the model again each time, as long as the chunk itself on a
GPU). That is safe because:

* a worker that dies takes its chunks with it, and nothing else: the
  scheduler runs them again elsewhere (``distributed.scheduler.allowed-failures``
  times at most); a chunk that raises is run again ``retries=`` times;
* cancelling is seen between batches (the analysis's cancel event, or this
  task no longer wanted), so a chunk stops within a batch's time;
* nothing is written by the task: it returns its arrays, and the client joins
  and writes them.

It tells the client when an attempt starts and ends (worker events on the
analysis's topic), so ``progress()`` shows running chunks, their workers and
attempts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .infer import Cancelled, predict_range

CHECK_S = 1.0  # how often a running chunk asks whether the analysis was cancelled


@dataclass(frozen=True)
class ChunkJob:
    analysis_id: str
    video_index: int
    chunk_index: int
    video: str
    start: int
    stop: int
    model_dir: str
    batch: int = 16
    device: str = "auto"


def topic(analysis_id: str) -> str:
    return f"posehub-analyze-{analysis_id}"


def cancel_event(analysis_id: str) -> str:
    return f"posehub-analyze-cancel-{analysis_id}"


class StopCheck:
    """True once the analysis's cancel event is set or this task was cancelled; asks at most every
    ``CHECK_S`` (the event is a round trip to the scheduler)."""

    def __init__(self, event, worker, key):
        self.event, self.worker, self.key = event, worker, key
        self.asked = 0.0

    def __call__(self) -> bool:
        ts = self.worker.state.tasks.get(self.key) if self.key is not None else None
        if self.key is not None and (ts is None or ts.state in ("cancelled", "released", "forgotten")):
            return True
        now = time.monotonic()
        if now - self.asked < CHECK_S:
            return False
        self.asked = now
        try:
            return bool(self.event.is_set())
        except Exception:  # noqa: BLE001 - the scheduler is briefly out of reach: go on predicting
            return False


def run_chunk(job: ChunkJob) -> dict:
    """Predict one chunk on this worker: ``{"status": "done", "start", "stop", "points", "scores", "worker",
    "seconds", "device", "threads"}``, or ``{"status": "cancelled", ...}``. Errors are raised (Dask retries)."""
    from distributed import Event, get_worker

    worker = get_worker()
    key = worker.get_current_task()
    where = {"video": job.video_index, "chunk": job.chunk_index, "worker": worker.address, "pid": os.getpid()}

    def send(kind: str, **msg) -> None:
        try:
            worker.log_event(topic(job.analysis_id), {"kind": kind, **where, **msg})
        except Exception:  # noqa: BLE001 - a lost event must not stop the chunk
            pass

    send("started")
    try:
        check = StopCheck(Event(cancel_event(job.analysis_id)), worker, key)
        out = predict_range(job.model_dir, job.video, job.start, job.stop, job.batch, job.device, should_stop=check)
    except Cancelled:
        send("ended", state="cancelled")
        return {"status": "cancelled", "start": job.start, "stop": job.stop, "worker": worker.address}
    except BaseException as e:
        send("ended", state="attempt-failed", error=f"{type(e).__name__}: {e}")
        raise
    send("ended", state="done", seconds=out["seconds"])
    return {"status": "done", **out}
