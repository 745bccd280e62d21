"""``analyze`` and the handle it returns: progress, cancel, wait, results.

One Dask task per chunk (:func:`posehub.analyze.task.run_chunk`), keyed
``posehub-analyze-<id>-v<video>-<stem>-<start>-<stop>``. The handle follows
the chunks through the events their tasks send (an attempt started or ended,
on which worker) and through their futures; each result is fetched as soon as
its chunk is done and its future released, so a worker that dies later does
not make the scheduler compute it again. A background thread joins a video's
chunks as soon as all are in and writes its files (:mod:`~.outputs`), while
the other videos' chunks go on. A chunk that fails for good (after its
retries) fails its video: the video's other chunks are cancelled, its error
recorded, and the other videos finish.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from functools import partial

from . import outputs
from .outputs import VideoResult
from .plan import AnalyzeError, Plan, join, make_plan
from .task import ChunkJob, cancel_event, run_chunk, topic

log = logging.getLogger(__name__)

FINAL = frozenset({"done", "failed", "cancelled"})


@dataclasses.dataclass
class _Chunk:
    start: int
    stop: int
    key: str = ""
    state: str = "queued"  # queued, running, done, failed, cancelled
    attempts: int = 0
    worker: str = ""
    pid: int | None = None
    error: str = ""
    result: dict | None = None

    def view(self) -> dict:
        return {"start": self.start, "stop": self.stop, "state": self.state, "attempts": self.attempts,
                "worker": self.worker, "pid": self.pid, "error": self.error,
                "seconds": (self.result or {}).get("seconds")}


@dataclasses.dataclass
class _Video:
    plan: object  # VideoPlan
    chunks: list[_Chunk]
    state: str = "queued"  # queued, running, writing, done, failed, cancelled
    error: str = ""
    result: VideoResult | None = None


class Analysis:
    """A running batch analysis. ``progress()``, ``cancel()``, ``done()``, ``wait()``, ``results()``,
    ``table()``, ``on_update(callback)``; ``plan`` is what was checked and submitted."""

    def __init__(self, plan: Plan, client, resources: dict | None = None):
        self.plan = plan
        self.id = plan.id
        self.client = client
        self.resources = dict(resources or {})
        self.topic = topic(plan.id)
        self._lock = threading.RLock()
        self._videos = [_Video(v, [_Chunk(a, b) for a, b in v.chunks]) for v in plan.videos]
        for v in self._videos:
            if v.plan.error:
                v.state, v.error = "failed", v.plan.error
                v.result = VideoResult(v.plan.path, "failed", v.plan.error)
        self._futures: dict[str, object] = {}
        self._live: dict[tuple[int, int], str] = {}  # chunks with an attempt under way -> its worker
        self._callbacks: list = []
        self._changed = threading.Event()
        self._finished = threading.Event()
        self._cancelling = False
        self._thread = threading.Thread(target=self._background, name=f"posehub-{plan.id}", daemon=True)

    # ------------------------------------------------------------ starting

    def _key(self, v: _Video, c: _Chunk) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", v.plan.name)[:60]
        return f"posehub-analyze-{self.id}-v{v.plan.index}-{stem}-{c.start}-{c.stop}"

    def _start(self) -> Analysis:
        self.client.subscribe_topic(self.topic, self._on_event)
        p = self.plan
        submitted = []
        for v in self._videos:
            if v.state in FINAL:
                continue
            for ci, c in enumerate(v.chunks):
                job = ChunkJob(p.id, v.plan.index, ci, v.plan.path, c.start, c.stop, p.model_dir,
                               p.params["batch"], p.params["device"])
                c.key = self._key(v, c)
                f = self.client.submit(run_chunk, job, key=c.key, pure=False, retries=p.params["retries"],
                                       resources=self.resources or None)
                self._futures[c.key] = f
                submitted.append((v.plan.index, ci, f))
        for vi, ci, f in submitted:
            f.add_done_callback(partial(self._on_done, vi, ci))
        self._thread.start()
        self._changed.set()
        return self

    # ------------------------------------------------------------ what the chunks say

    def _on_event(self, event) -> None:
        _, msg = event
        try:
            vi, ci = int(msg["video"]), int(msg["chunk"])
            c = self._videos[vi].chunks[ci]
        except (KeyError, IndexError, TypeError, ValueError):
            return
        with self._lock:
            v = self._videos[vi]
            if msg.get("kind") == "started":
                c.attempts += 1
                c.worker, c.pid = msg.get("worker", ""), msg.get("pid")
                self._live[(vi, ci)] = c.worker
                if c.state == "queued":
                    c.state = "running"
                if v.state == "queued":
                    v.state = "running"
            elif msg.get("kind") == "ended":
                if self._live.get((vi, ci)) == msg.get("worker"):
                    del self._live[(vi, ci)]
                if msg.get("state") == "attempt-failed" and c.state not in FINAL:
                    c.error = msg.get("error", "")
        self._changed.set()

    def _on_done(self, vi: int, ci: int, future) -> None:
        v = self._videos[vi]
        c = v.chunks[ci]
        status, outcome, error = future.status, None, ""
        if status == "finished":
            try:
                outcome = future.result()
            except Exception as e:  # noqa: BLE001 - lost between finishing and fetching
                status, error = "error", f"{type(e).__name__}: {e}"
        elif status == "error":
            try:
                exc = future.exception()
                error = f"{type(exc).__name__}: {exc}"
            except Exception as e:  # noqa: BLE001
                error = f"{type(e).__name__}: {e}"
        cancel_rest = False
        with self._lock:
            if c.state in FINAL:
                pass
            elif outcome is not None and outcome.get("status") == "done":
                c.state, c.result, c.error = "done", outcome, ""
                c.worker = outcome.get("worker", c.worker)
            elif status == "error":
                c.state, c.error = "failed", error
                if v.state not in FINAL:
                    v.state = "failed"
                    v.error = f"frames {c.start}..{c.stop}: {error}"
                    cancel_rest = True
            else:  # cancelled
                c.state = "cancelled"
            self._futures.pop(c.key, None)
        try:
            future.release()  # the data is here now: the scheduler may forget it
        except Exception:  # noqa: BLE001 - the client is closing
            pass
        if cancel_rest:
            self._cancel_video(vi)
        self._changed.set()

    def _cancel_video(self, vi: int) -> None:
        v = self._videos[vi]
        with self._lock:
            pending = [self._futures.pop(c.key) for c in v.chunks if c.key in self._futures]
            for c in v.chunks:
                if c.state not in FINAL:
                    c.state = "cancelled"
        if pending:
            try:
                self.client.cancel(pending)
            except Exception:  # noqa: BLE001 - the client is closing
                pass

    # ------------------------------------------------------------ background: joining and writing

    def _background(self) -> None:
        while True:
            changed = self._changed.wait(1.0)
            self._changed.clear()
            for v in self._videos:
                with self._lock:
                    ready = v.state not in FINAL and all(c.state == "done" for c in v.chunks)
                    if ready:
                        v.state = "writing"
                if ready:
                    self._write(v)
                    changed = True
            with self._lock:
                ended = all(v.state in FINAL for v in self._videos)
            if changed and not ended:
                self._notify()
            if ended:
                break
        if self._cancelling:
            self._wait_stopped(30)
        try:
            self.client.unsubscribe_topic(self.topic)
        except Exception:  # noqa: BLE001 - the client is closing
            pass
        self._finished.set()
        self._notify()

    def _write(self, v: _Video) -> None:
        chunks = [{**{k: val for k, val in c.result.items() if k not in ("points", "scores")},
                   "attempts": max(c.attempts, 1)} for c in v.chunks]
        try:
            joined = join([c.result for c in v.chunks], v.plan.frames, v.plan.path)
            result = outputs.write(self.plan, v.plan, joined["points"], joined["scores"], chunks)
        except Exception as e:  # noqa: BLE001 - one video's failure must not stop the others
            log.warning("analysis %s: %s: %s", self.id, v.plan.path, e)
            with self._lock:
                v.state, v.error = "failed", f"writing the outputs: {type(e).__name__}: {e}"
                v.result = VideoResult(v.plan.path, "failed", v.error, v.plan.frames, chunks=chunks)
            return
        with self._lock:
            v.result, v.state = result, "done"
            for c in v.chunks:  # the arrays live on in the result
                c.result = {k: val for k, val in c.result.items() if k not in ("points", "scores")}

    def _notify(self) -> None:
        for cb in list(self._callbacks):
            try:
                cb(self)
            except Exception:  # noqa: BLE001 - a widget's error must not stop the analysis
                log.exception("analysis %s: on_update callback failed", self.id)

    def _wait_stopped(self, timeout: float) -> bool:
        """Every attempt under way has ended (attempts on workers that left count as ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                live = set(self._live.values())
            if not live:
                return True
            try:
                alive = set(self.client.scheduler_info()["workers"])
            except Exception:  # noqa: BLE001
                alive = live
            if not live & alive:
                return True
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------ public

    def progress(self) -> list[dict]:
        """Per video: status (queued, running, writing, done, failed, cancelled), chunks done and in all,
        frames done and in all, the workers it ran on, error, and each chunk's state, attempts and worker."""
        with self._lock:
            out = []
            for v in self._videos:
                done = [c for c in v.chunks if c.state == "done"]
                out.append({"video": v.plan.path, "name": v.plan.name, "status": v.state,
                            "chunks_done": len(done), "chunks": len(v.chunks),
                            "frames_done": sum(c.stop - c.start for c in done), "frames": v.plan.frames,
                            "workers": sorted({c.worker for c in v.chunks if c.worker}), "error": v.error,
                            "chunk_states": [c.view() for c in v.chunks]})
            return out

    def on_update(self, callback):
        """Call ``callback(analysis)`` (in a background thread) when a video's progress changes and once more
        when everything has ended. Returns the callback, so it can be a decorator."""
        self._callbacks.append(callback)
        self._changed.set()
        return callback

    def done(self) -> bool:
        """Every video has ended (done, failed or cancelled) and the finished ones are written."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until ``done()``; False when ``timeout`` (seconds) passed first."""
        return self._finished.wait(timeout)

    def cancel(self, timeout: float = 30) -> bool:
        """Stop every chunk: queued ones never start, running ones stop before their next batch. Videos
        already written stay done. True when every running chunk confirmed it stopped within ``timeout``."""
        from distributed import Event

        with self._lock:
            self._cancelling = True
            pending = list(self._futures.values())
            self._futures.clear()
        Event(cancel_event(self.id), client=self.client).set()
        if pending:
            self.client.cancel(pending)
        with self._lock:
            for v in self._videos:
                if v.state in FINAL or v.state == "writing":
                    continue
                v.state = "cancelled"
                for c in v.chunks:
                    if c.state not in FINAL:
                        c.state = "cancelled"
        self._changed.set()
        return self._wait_stopped(timeout)

    def results(self, timeout: float | None = None) -> list[VideoResult]:
        """Per video, in the order analysed: status, error, frames, mean confidence, share of low-confidence
        frames, the files written, its chunks and, for the finished ones, the points and scores."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"analysis {self.id} is still running after {timeout} s")
        with self._lock:
            return [v.result or VideoResult(v.plan.path, v.state, v.error, v.plan.frames,
                                            chunks=[c.view() for c in v.chunks])
                    for v in self._videos]

    def table(self, timeout: float | None = None):
        """The results as a pandas DataFrame, one row per video (its file name)."""
        import pandas as pd

        rows = [{"video": r.video, "status": r.status, "frames": r.frames, "mean confidence": r.mean_confidence,
                 "low-confidence share": r.low_confidence_share, "chunks": len(r.chunks),
                 "workers": len(r.workers), "error": r.error} for r in self.results(timeout)]
        df = pd.DataFrame(rows).set_index("video")
        return df.astype({"frames": int, "mean confidence": float, "low-confidence share": float})

    def __repr__(self) -> str:
        states = [p["status"] for p in self.progress()]
        counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        return f"<Analysis {self.id}: {len(states)} video(s), {counts}>"


def analyze(model, videos, *, client=None, out=None, out_fs=None, chunk_frames: int = 500, retries: int = 2,
            batch: int = 16, low_confidence: float = 0.5, overwrite: bool = False, device: str = "auto",
            resources: dict | None = None, name: str | None = None, overlay: bool = False) -> Analysis:
    """Predict every frame of ``videos`` with a trained ``model`` on a Dask cluster; returns an
    :class:`Analysis` handle at once.

    ``model``: a PoseHub run folder (``model.json``; what ``train_and_evaluate`` or an ensemble member
    wrote). ``videos``: a path, a folder, a glob (``"~/buckets/lab/videos/*.mp4"``) or a list of them; the
    workers must see the same paths (on Dask Gateway, ``~/buckets`` is mounted as in the workspace).
    ``out``: where the files go (a folder or a bucket URL, through ``out_fs``); beside each video by
    default; ``overwrite`` replaces files already there. ``chunk_frames``: frames per task, rounded up to a
    multiple of ``batch`` (frames per call of the model). ``retries``: how often a chunk that raises is
    run again (a chunk whose worker dies is run again by the scheduler). ``low_confidence``: the
    threshold for the share of low-confidence frames in each video's record. ``device``: where the
    workers predict ("auto": their GPU when they have one). ``resources``: what each chunk asks of a
    worker (e.g. ``{"GPU": 1}``); none by default. ``client``: any ``distributed.Client`` (default: the
    current one). ``overlay``: also write ``<stem>.overlay.mp4``, the video with the points drawn on it
    (by the client, after the video's chunks are joined: it decodes the video once more).

    Everything is checked before anything is submitted; bad input raises :class:`AnalyzeError`. A video
    that cannot be read among readable ones is reported as failed and the others are analysed.
    """
    if resources is not None and not (isinstance(resources, dict) and all(
            isinstance(k, str) and isinstance(val, (int, float)) and val > 0 for k, val in resources.items())):
        raise AnalyzeError(f"resources must be None or a dict like {{'GPU': 1}}, got {resources!r}")
    plan = make_plan(model, videos, out=out, out_fs=out_fs, chunk_frames=chunk_frames, batch=batch,
                     retries=retries, low_confidence=low_confidence, overwrite=overwrite, device=device, name=name,
                     overlay=overlay)
    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            raise AnalyzeError("no Dask client: start one (distributed.Client(cluster) or a Dask Gateway "
                               "cluster's get_client()) or pass client=") from None
    return Analysis(plan, client, resources)._start()
