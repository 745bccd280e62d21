"""The Dask task of one ensemble member: start its process, relay what it says, stop it on cancel.

The training runs in a child process (``python -m posehub.ensemble.member``)
that the kernel kills when the worker dies (Linux ``PR_SET_PDEATHSIG``), so a
killed worker leaves no training behind; the scheduler then runs the task
again elsewhere (``distributed.scheduler.allowed-failures`` times at most).
A child that fails raises :class:`MemberFailed`, which Dask retries
(``retries=`` of the submit). Progress and log lines go to the client as
worker events on the ensemble's topic; the task polls the ensemble's cancel
event (and its own task state) and kills the child within about a second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import pickle
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from .member import MemberJob

POLL_S = 0.5  # how often the task relays and looks for a cancel
GRACE_S = 1.0  # between SIGTERM and SIGKILL
TAIL = 40  # log lines kept for the error message of a failed member
PR_SET_PDEATHSIG = 1


class MemberFailed(RuntimeError):
    """A member's training process failed; the message has its error and last log lines."""


def topic(ensemble_id: str) -> str:
    return f"posehub-ensemble-{ensemble_id}"


def cancel_event(ensemble_id: str) -> str:
    return f"posehub-cancel-{ensemble_id}"


def die_with_parent():
    """A ``preexec_fn`` that makes the kernel SIGKILL the child when the thread that started it (the task's)
    dies with its worker. Resolved before the fork: the child only calls prctl."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


_gpu_lock = threading.Lock()
_gpus_in_use: set[int] = set()


def _take_gpu(total: int) -> int | None:
    """A GPU of this worker no other member of it uses, when it has several."""
    if total <= 1:
        return None
    with _gpu_lock:
        free = [i for i in range(total) if i not in _gpus_in_use]
        if not free:
            return None
        _gpus_in_use.add(free[0])
        return free[0]


def _give_gpu(slot: int | None) -> None:
    if slot is not None:
        with _gpu_lock:
            _gpus_in_use.discard(slot)


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def child_env(gpu_slot: int | None = None, threads: int | None = None) -> dict:
    """The training process's environment: the worker's, with this package importable, its GPU, and
    ``threads`` CPU threads (Dask's nanny sets the thread variables of the worker itself to 1; a member
    is the only task of its worker, so it gets the worker's threads)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update({var: str(threads) for var in THREAD_VARS})
    here = str(Path(__file__).resolve().parents[2])  # the folder holding this posehub package
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if gpu_slot is not None:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[gpu_slot] if gpu_slot < len(visible) else str(gpu_slot)
    return env


def worker_threads() -> int | None:
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except Exception:  # noqa: BLE001 - not in a worker (tests): the environment as it is
        return None


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, SIGKILL after ``GRACE_S``."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # anything the child started and left behind in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(stream, kind: str, out: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        out.put((kind, raw.decode("utf-8", "replace").rstrip("\n")))
    stream.close()


class Relay:
    """Sends the member's events to the client: state and progress at once, log lines in batches."""

    def __init__(self, worker, topic_: str, member: int):
        self.worker, self.topic, self.member = worker, topic_, member
        self.logs: list[str] = []

    def send(self, kind: str, **msg) -> None:
        try:
            self.worker.log_event(self.topic, {"member": self.member, "kind": kind,
                                               "worker": self.worker.address, **msg})
        except Exception:  # noqa: BLE001 - a lost event must not stop the training
            pass

    def log(self, line: str) -> None:
        self.logs.append(line[:2000])

    def flush(self) -> None:
        if self.logs:
            self.send("log", lines=self.logs[-200:])
            self.logs = []


def _progress_msg(msg: dict) -> dict:
    keep = ("phase", "epoch", "epochs", "loss", "url", "error")
    return {k: msg[k] for k in keep if k in msg and isinstance(msg[k], (str, int, float, type(None)))}


def _relay_line(kind: str, line: str, relay: Relay, tail: deque, said: dict) -> None:
    """A line of the child's: protocol (JSON on stdout) or log text (anything else)."""
    msg = None
    if kind == "out":
        try:
            msg = json.loads(line)
        except ValueError:
            pass
    if not isinstance(msg, dict):
        tail.append(line)
        relay.log(line)
    elif "log" in msg:
        relay.log(str(msg["log"]))
    elif "phase" in msg:
        if msg["phase"] in ("done", "error"):
            said[msg["phase"]] = msg if msg["phase"] == "done" else str(msg.get("error", ""))
        relay.send("progress", **_progress_msg(msg))


def _cancelled(event, worker, key) -> bool:
    """The ensemble's cancel event is set (waits up to ``POLL_S`` for it), or this task was cancelled."""
    ts = worker.state.tasks.get(key) if key is not None else None
    if key is not None and (ts is None or ts.state in ("cancelled", "released", "forgotten")):
        return True
    try:
        return bool(event.wait(timeout=POLL_S))
    except Exception:  # noqa: BLE001 - the scheduler is briefly out of reach: go on training
        time.sleep(POLL_S)
        return False


def run_member(job: MemberJob) -> dict:
    """Train one member in a child process; ``{"status": "done", ...}`` with its predictions, or
    ``{"status": "cancelled"}``. Raises :class:`MemberFailed` when the training fails."""
    from distributed import Event, get_worker

    worker = get_worker()
    key = worker.get_current_task()
    relay = Relay(worker, topic(job.ensemble_id), job.index)
    event = Event(cancel_event(job.ensemble_id))
    base = {"member": job.index, "seed": job.seed, "worker": worker.address}
    relay.send("state", state="started")  # a new attempt: the client counts them
    if _cancelled(event, worker, key):
        relay.send("state", state="cancelled", pid=None)
        return {"status": "cancelled", **base}
    slot = _take_gpu(int(worker.state.total_resources.get("GPU", 0)))
    workdir = Path(tempfile.mkdtemp(prefix=f"posehub-{job.ensemble_id}-m{job.index}-",
                                    dir=getattr(worker, "local_directory", None)))
    proc = None
    try:
        job_file = workdir / "job.pickle"
        with open(job_file, "wb") as f:
            pickle.dump(job, f)
        proc = subprocess.Popen([sys.executable, "-m", "posehub.ensemble.member", str(job_file)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=workdir, env=child_env(slot, worker_threads()), preexec_fn=die_with_parent(),
                                start_new_session=True)
        relay.send("state", state="running", pid=proc.pid)
        lines: queue.Queue = queue.Queue()
        readers = [threading.Thread(target=_pump, args=(s, k, lines), daemon=True)
                   for s, k in ((proc.stdout, "out"), (proc.stderr, "err"))]
        for t in readers:
            t.start()
        tail: deque[str] = deque(maxlen=TAIL)
        said: dict = {}  # the child's "done" and "error" messages
        ended = None
        while True:
            while not lines.empty():
                _relay_line(*lines.get_nowait(), relay, tail, said)
            relay.flush()
            if proc.poll() is not None:
                ended = ended or time.monotonic()
                if not any(t.is_alive() for t in readers) or time.monotonic() - ended > 5:
                    if lines.empty():
                        break
                    continue
            if _cancelled(event, worker, key):
                pid = proc.pid
                stop(proc)
                relay.send("state", state="cancelled", pid=pid)
                return {"status": "cancelled", **base}
        result = said.get("done")
        if proc.returncode != 0 or result is None:
            error = said.get("error") or f"the training process ended with exit status {proc.returncode}"
            relay.send("state", state="attempt-failed", error=error)
            raise MemberFailed(f"member {job.index} (seed {job.seed}) on {worker.address}: {error}\n"
                               + "\n".join(list(tail)[-15:]))
        import numpy as np

        with np.load(result["predictions"]) as z:
            predictions = {k: z[k] for k in z.files}
        return {"status": "done", **base, "url": result.get("url", ""), "metrics": result.get("metrics", {}),
                "train_s": result.get("train_s"), "device": result.get("device", ""), "predictions": predictions}
    finally:
        if proc is not None and proc.poll() is None:
            stop(proc)
        _give_gpu(slot)
        shutil.rmtree(workdir, ignore_errors=True)
