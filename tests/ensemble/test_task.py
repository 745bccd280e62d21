"""The pieces of a member's task that need no Dask: the child dies with its parent, video frames."""

import subprocess
import sys
import threading
import time

import pytest

from posehub.ensemble.member import video_indices
from posehub.ensemble.task import child_env, die_with_parent, stop


def gone(proc, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_is_killed_when_the_thread_that_started_it_ends():
    box = {}

    def start():  # as a worker's task thread does; the thread ends, as it does when the worker dies
        box["proc"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                       preexec_fn=die_with_parent(), start_new_session=True)

    t = threading.Thread(target=start)
    t.start()
    t.join()
    assert gone(box["proc"])
    assert box["proc"].returncode == -9  # SIGKILL from the kernel


def test_stop_ends_a_child_that_ignores_sigterm():
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, start_new_session=True)
    proc.stdout.readline()
    t = time.monotonic()
    stop(proc)
    assert proc.poll() == -9 and time.monotonic() - t < 5


def test_the_child_imports_this_checkout():
    env = child_env(gpu_slot=None)
    assert env["PYTHONPATH"].split(":")[0].endswith("extensions") and env["PYTHONUNBUFFERED"] == "1"
    assert child_env(gpu_slot=1)["CUDA_VISIBLE_DEVICES"] == "1"


def test_video_frames_are_spread_evenly():
    assert video_indices(2, 2330) == [0, 2329]
    assert video_indices(5, 101) == [0, 25, 50, 75, 100]
    assert video_indices(10, 3) == [0, 1, 2]
    assert video_indices(0, 100) == []
    assert video_indices([5, 1], 10) == [5, 1]
    with pytest.raises(ValueError, match="frame 10 is outside the video"):
        video_indices([10], 10)
