"""``train_ensemble`` and the handle it returns: progress, logs, cancel, results.

The handle follows the members through the events their tasks send (topic
``posehub-ensemble-<id>``) and through their futures. A background thread
calls the ``on_update`` callbacks (never Dask's event loop, so a callback may
call ``results()``), notices workers that left (a member on one is
``retrying`` until the scheduler starts it again), and when every member has
ended computes the consensus and writes the ensemble's files.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from functools import partial

from .member import MemberJob
from .results import EnsembleResult, build, write
from .spec import EnsembleError, EnsembleSpec, FsRef, member_resources, validate
from .task import cancel_event, run_member, topic

log = logging.getLogger(__name__)

STATES = ("queued", "running", "retrying", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})


@dataclasses.dataclass
class _Member:
    index: int
    seed: int
    epochs: int
    state: str = "queued"
    phase: str = ""
    epoch: int = 0
    loss: float | None = None
    attempt: int = 0
    worker: str = ""
    pid: int | None = None
    live: bool = False  # a task of it has started and not yet said it stopped
    error: str = ""
    url: str = ""
    outcome: dict | None = None
    logs: deque = dataclasses.field(default_factory=lambda: deque(maxlen=500))

    def view(self) -> dict:
        return {"member": self.index, "seed": self.seed, "state": self.state, "phase": self.phase,
                "epoch": self.epoch, "epochs": self.epochs, "loss": self.loss, "attempt": self.attempt,
                "worker": self.worker, "pid": self.pid, "error": self.error, "url": self.url}


class Ensemble:
    """A running ensemble. ``progress``, ``log_tail()``, ``cancel()``, ``done()``, ``wait()``,
    ``results()``, ``on_update(callback)``; ``futures`` are the members' Dask futures."""

    def __init__(self, spec: EnsembleSpec, client, resources: dict):
        self.spec = spec
        self.id = spec.id
        self.client = client
        self.resources = resources
        self.topic = topic(spec.id)
        self.futures: list = []
        self._lock = threading.RLock()
        self._members = [_Member(i, s, int(spec.params.get("epochs", 0))) for i, s in enumerate(spec.seeds)]
        self._logs: deque[str] = deque(maxlen=2000)
        self._callbacks: list = []
        self._changed = threading.Event()
        self._ended = threading.Event()  # every member has ended
        self._finished = threading.Event()  # ... and the results are computed (or failed)
        self._cancelling = False
        self._result: EnsembleResult | None = None
        self._result_error: BaseException | None = None
        self._result_lock = threading.Lock()
        self._thread = threading.Thread(target=self._background, name=f"posehub-{spec.id}", daemon=True)

    # ------------------------------------------------------------ starting

    def _jobs(self) -> list[MemberJob]:
        s = self.spec
        labels = dataclasses.replace(s.labels, fs=None)  # the filesystem travels as an FsRef
        return [MemberJob(ensemble_id=s.id, index=i, seed=seed, framework=s.framework, params=s.params,
                          split=s.split, labels=labels, dest=s.member_dest(i), labels_fs=FsRef.of(s.labels.fs),
                          dest_fs=FsRef.of(s.dest_fs), video=s.video, video_frames=s.video_frames,
                          video_fs=FsRef.of(s.video_fs))
                for i, seed in enumerate(s.seeds)]

    def _start(self) -> Ensemble:
        self.client.subscribe_topic(self.topic, self._on_event)
        for job in self._jobs():
            f = self.client.submit(run_member, job, key=f"posehub-member-{self.id}-{job.index}", pure=False,
                                   resources=self.resources or None, retries=self.spec.retries)
            self.futures.append(f)
        for i, f in enumerate(self.futures):
            f.add_done_callback(partial(self._on_done, i))
        self._thread.start()
        return self

    # ------------------------------------------------------------ what the members say

    def _on_event(self, event) -> None:
        _, msg = event
        try:
            m = self._members[int(msg["member"])]
        except (KeyError, IndexError, TypeError, ValueError):
            return
        kind = msg.get("kind")
        with self._lock:
            if kind == "log":
                for line in msg.get("lines", []):
                    m.logs.append(line)
                    self._logs.append(f"[member {m.index}] {line}")
            elif kind == "state":
                st = msg.get("state")
                if st == "started":
                    m.attempt += 1
                    m.live, m.worker, m.pid, m.epoch, m.phase, m.loss = True, msg.get("worker", ""), None, 0, "", None
                    if m.state not in FINAL:
                        m.state = "running"
                elif st == "running":
                    m.pid = msg.get("pid")
                elif st == "attempt-failed":
                    m.error, m.live, m.pid = msg.get("error", ""), False, None
                    if m.state not in FINAL:
                        m.state = "retrying"
                elif st == "cancelled":
                    m.live, m.pid = False, None
                    m.state = "cancelled" if m.state not in ("done", "failed") else m.state
            elif kind == "progress" and m.state not in FINAL:
                m.phase = msg.get("phase", m.phase)
                if "epoch" in msg:
                    m.epoch, m.epochs = int(msg["epoch"]), int(msg.get("epochs") or m.epochs)
                    m.loss = msg.get("loss")
                if m.phase == "error":
                    m.error = msg.get("error", "")
        self._changed.set()

    def _on_done(self, i: int, future) -> None:
        m = self._members[i]
        status = future.status
        outcome: dict | None = None
        error = ""
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
        with self._lock:
            if outcome is not None:
                m.outcome = outcome
                m.state = outcome.get("status", "done")
                m.url, m.worker = outcome.get("url", ""), outcome.get("worker", m.worker)
                if m.state == "done":
                    m.phase, m.epoch, m.error = "done", m.epochs, ""
                m.live, m.pid = False, None  # the task returned: its training process is gone
            elif status == "error":
                m.state, m.error, m.live = "failed", error, False
            else:  # cancelled, lost
                m.state = "cancelled"
            ended = all(x.state in FINAL for x in self._members)
        if ended:
            self._ended.set()
        self._changed.set()

    # ------------------------------------------------------------ background: callbacks, lost workers, results

    def _background(self) -> None:
        while True:
            changed = self._changed.wait(1.0)
            self._changed.clear()
            changed |= self._notice_lost_workers()
            if self._ended.is_set() and not self._finished.is_set():
                self._wait_stopped(30 if self._cancelling else 5)
                try:
                    self.results()
                except Exception as e:  # noqa: BLE001 - results() raises it again to the caller
                    log.warning("ensemble %s: writing the results failed: %s", self.id, e)
                self._finished.set()
                try:
                    self.client.unsubscribe_topic(self.topic)
                except Exception:  # noqa: BLE001 - the client is closing
                    pass
                changed = True
            if changed:
                self._notify()
            if self._finished.is_set():
                return

    def _notice_lost_workers(self) -> bool:
        """Members on a worker that left are ``retrying``; True when there were any."""
        with self._lock:
            watched = {m.worker for m in self._members if m.state == "running" and m.worker}
        if not watched:
            return False
        try:
            alive = set(self.client.scheduler_info()["workers"])
        except Exception:  # noqa: BLE001 - asked again in a second
            return False
        lost = False
        with self._lock:
            for m in self._members:
                if m.state == "running" and m.worker and m.worker not in alive:
                    m.state, m.live, m.pid = "retrying", False, None
                    m.logs.append(f"worker {m.worker} left; the scheduler runs this member again")
                    lost = True
        return lost

    def _notify(self) -> None:
        for cb in list(self._callbacks):
            try:
                cb(self)
            except Exception:  # noqa: BLE001 - a widget's error must not stop the ensemble
                log.exception("ensemble %s: on_update callback failed", self.id)

    def _wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not any(m.live for m in self._members):
                    return True
            time.sleep(0.1)
        return False

    # ------------------------------------------------------------ public

    @property
    def progress(self) -> list[dict]:
        """Per member: state (queued, running, retrying, done, failed, cancelled), phase, epoch, epochs,
        loss, attempt, worker, pid of its training process, error, url."""
        with self._lock:
            return [m.view() for m in self._members]

    def log_tail(self, n: int = 20, member: int | None = None) -> list[str]:
        """The last ``n`` log lines of one member, or of all (each prefixed with its member)."""
        with self._lock:
            lines = list(self._logs if member is None else self._members[member].logs)
        return lines[-n:] if n else []

    def on_update(self, callback):
        """Call ``callback(ensemble)`` (in a background thread) whenever a member's progress changes and
        once more when the results are ready. Returns the callback, so it can be a decorator."""
        self._callbacks.append(callback)
        self._changed.set()
        return callback

    def done(self) -> bool:
        """Every member has ended and the results are written."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until ``done()``; False when ``timeout`` (seconds) passed first."""
        return self._finished.wait(timeout)

    def cancel(self, timeout: float = 30) -> bool:
        """Stop every member: queued ones never start, running ones kill their training process (within a
        few seconds). True when every started member confirmed it stopped within ``timeout``."""
        from distributed import Event

        with self._lock:
            self._cancelling = True
        Event(cancel_event(self.id), client=self.client).set()
        self.client.cancel([f for f in self.futures if not f.done()])
        stopped = self._wait_stopped(timeout)
        with self._lock:
            for m in self._members:
                if m.state not in FINAL:
                    m.state = "cancelled"
        self._ended.set()
        self._changed.set()
        return stopped

    def results(self, timeout: float | None = None) -> EnsembleResult:
        """The members' and the consensus's test errors and the frames to label next, computed once every
        member has ended, and written under ``dest`` (``ensemble.json``, ``split.json``,
        ``consensus.csv``, ``label_next.csv``)."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"ensemble {self.id} is still running after {timeout} s")
        with self._result_lock:
            if self._result is None:
                with self._lock:
                    outcomes = [{**(m.outcome or {}), "status": m.state, "seed": m.seed, "attempts": m.attempt,
                                 "worker": m.worker, "url": m.url, "error": m.error} for m in self._members]
                result = build(self.spec, outcomes)
                write(result, self.spec.dest_fs)
                self._result = result
            return self._result

    def __repr__(self) -> str:
        states = [m["state"] for m in self.progress]
        counts = ", ".join(f"{states.count(s)} {s}" for s in STATES if s in states)
        return f"<Ensemble {self.id}: {self.spec.members} {self.spec.framework} member(s), {counts}>"


def _resources(client, resources, worker_timeout: float) -> dict:
    if resources != "auto":
        return dict(resources or {})
    info = client.scheduler_info()
    if not info.get("workers"):
        try:
            client.wait_for_workers(1, timeout=worker_timeout)
        except TimeoutError:
            raise EnsembleError(f"the Dask cluster has no worker after {worker_timeout:.0f} s: scale it "
                                "(cluster.scale(n) or cluster.adapt(minimum=1)), or pass resources= "
                                "(e.g. {'GPU': 1})") from None
        info = client.scheduler_info()
    return member_resources(info)


def train_ensemble(labels, framework: str, members: int = 3, config: dict | None = None, seeds=None, *,
                   client=None, train_fraction: float = 0.8, split_seed: int = 0, labels_fs=None, video=None,
                   video_frames=None, video_fs=None, dest: str | None = None, dest_fs=None, retries: int = 2,
                   resources="auto", name: str | None = None, worker_timeout: float = 300) -> Ensemble:
    """Train ``members`` models of ``framework`` on ``labels`` on a Dask cluster, each with its own seed on
    the same seeded split; returns an :class:`Ensemble` handle at once.

    ``labels``: a posehub Labels, or the path/URL of a DeepLabCut CSV or project folder or a SLEAP ``.slp``
    (read through ``labels_fs``). ``config``: the framework's training parameters. ``seeds``: one per
    member (default 0..members-1). ``video``, ``video_frames``: a video (path or URL, read through
    ``video_fs``) and how many frames of it, sampled evenly (or which), the members also predict.
    ``dest``, ``dest_fs``: where models and results go (default ``ensembles/<id>`` under the home prefix).
    ``retries``: how often a member whose training fails is run again (a member whose worker dies is run
    again by the scheduler, up to its ``distributed.scheduler.allowed-failures``). ``resources``: what each
    member asks of a worker; "auto" picks from the workers (:func:`member_resources`). ``client``: any
    ``distributed.Client`` (default: the current one).

    Everything is checked before anything starts; bad input raises :class:`EnsembleError`.
    """
    spec = validate(labels, framework, members, config, seeds, train_fraction=train_fraction,
                    split_seed=split_seed, labels_fs=labels_fs, video=video, video_frames=video_frames,
                    video_fs=video_fs, dest=dest, dest_fs=dest_fs, retries=retries, name=name)
    if resources != "auto" and resources is not None and not (
            isinstance(resources, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and v > 0
                                                for k, v in resources.items())):
        raise EnsembleError(f"resources must be 'auto', None or a dict like {{'GPU': 1}}, got {resources!r}")
    if client is None:
        from distributed import get_client

        try:
            client = get_client()
        except ValueError:
            raise EnsembleError("no Dask client: start one (distributed.Client(cluster) or a Dask Gateway "
                                "cluster's get_client()) or pass client=") from None
    return Ensemble(spec, client, _resources(client, resources, worker_timeout))._start()
