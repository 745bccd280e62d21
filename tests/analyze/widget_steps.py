"""The "Analyse videos" tab built headless in the pose image's environment (ipywidgets, OpenCV), run by
test_analyze_form.py; also the fake watch client the tests share.

    .envs/pose/bin/python tests/analyze/widget_steps.py OUT DATA

Builds :class:`posehub.ensemble.widget.EnsembleWidget` with a fake watch client and a Dask Gateway that fails
if it is used, a budget of $1.00 left (``account.status`` replaced) and three worker profiles, then clicks
through: the tabs, the watched folders (list, pause, resume, watch a folder, the service absent), bad input
(nothing started), the estimate, a refusal over the budget, and a finished ensemble's folder prefilled.
Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

PROFILES = [{"slug": "pose-cpu", "display_name": "Pose (CPU)", "cpu": 1, "memory": "2G", "price_per_hour": 0.2},
            {"slug": "gpu", "display_name": "One GPU", "cpu": 8, "memory": "32G", "gpus": 1, "price_per_hour": 1.21},
            {"slug": "dear", "display_name": "Dear", "cpu": 1, "memory": "2G", "price_per_hour": 500}]
STATUS = {"period": "2026-12", "budget": "300.00", "spent": "299.00", "remaining": "1.00", "percent_used": "99.7"}
W1 = {"id": 1, "owner": "alice", "bucket": "lab", "prefix": "videos/incoming/", "model": "~/buckets/home/runs/m1",
      "profile": "pose-cpu", "out_prefix": "analyses/", "state": "active", "reason": "",
      "counts": {"done": 3, "failed": 1, "queued": 2, "running": 1}}
W2 = {**W1, "id": 2, "prefix": "cam2/", "state": "paused", "reason": "budget used up", "counts": None}


def member(i, status, mean, url):
    return SimpleNamespace(index=i, status=status, url=url, mean_px=mean)


class FakeWatchError(Exception):
    pass


class FakeWatchClient:
    """posehub.watch.client's functions over a list; ``down`` makes every call fail as an absent service does."""

    WatchError = FakeWatchError

    def __init__(self, watches=(), down: str = ""):
        self.items = [dict(x) for x in watches]
        self.down = down
        self.calls = []

    def _check(self, *call):
        self.calls.append(call)
        if self.down:
            raise FakeWatchError(self.down)

    def list_watches(self):
        self._check("list")
        return [dict(x) for x in self.items]

    def _set(self, watch_id, state):
        for x in self.items:
            if x["id"] == watch_id:
                x["state"], x["reason"] = state, "paused by you" if state == "paused" else ""
                return dict(x)
        raise FakeWatchError(f"no watch {watch_id}")

    def pause_watch(self, watch_id):
        self._check("pause", watch_id)
        return self._set(watch_id, "paused")

    def resume_watch(self, watch_id):
        self._check("resume", watch_id)
        return self._set(watch_id, "active")

    def create_watch(self, bucket, prefix, model, profile, out_prefix):
        self._check("create", bucket, prefix, model, profile, out_prefix)
        if bucket == "readonly":
            raise FakeWatchError("bucket readonly is read-only for you: pick an output prefix in another bucket")
        item = {"id": len(self.items) + 1, "owner": "alice", "bucket": bucket, "prefix": prefix, "model": model,
                "profile": profile, "out_prefix": out_prefix, "state": "active", "reason": "",
                "counts": {"done": 0, "failed": 0, "queued": 0, "running": 0}}
        self.items.append(item)
        return dict(item)


class NoGateway:
    """A Dask Gateway that must not be used: bad input starts no cluster."""

    used: list = []

    def __getattr__(self, name):
        NoGateway.used.append(name)
        raise AssertionError(f"gateway.{name} was used: a cluster would have started")


class FakeGateway:
    """Dask Gateway's calls the tab makes, recorded; its cluster and client do nothing."""

    def __init__(self):
        self.calls = []
        gw = self

        class Cluster:
            name = "fake.c1"

            def scale(self, n):
                gw.calls.append(["scale", n])

            def get_client(self, set_as_default=True):
                gw.calls.append(["get_client"])
                return SimpleNamespace(close=lambda: gw.calls.append(["client.close"]))

            def shutdown(self):
                gw.calls.append(["shutdown"])

        self.cluster = Cluster()

    def submit(self, profile):
        self.calls.append(["submit", profile])
        return "fake.c1"

    def connect(self, name):
        self.calls.append(["connect", name])
        return self.cluster


class FakeAnalysis:
    """posehub.analyze's handle for one video: ``finish()`` or ``cancel()`` ends it."""

    def __init__(self, videos, out):
        import threading

        from posehub.analyze.outputs import VideoResult

        self.video, self.out, self.ended = str(videos), out, threading.Event()
        self.plan = SimpleNamespace(runnable=[videos])
        self.state, self.callbacks, self.VideoResult = "running", [], VideoResult

    def progress(self):
        done = self.state == "done"
        return [{"video": self.video, "name": Path(self.video).stem, "status": self.state, "chunks_done": int(done),
                 "chunks": 1, "frames_done": 60 * done, "frames": 60, "workers": ["tcp://w1"], "error": ""}]

    def on_update(self, cb):
        self.callbacks.append(cb)
        cb(self)

    def finish(self):
        self.state = "done"
        self.ended.set()

    def cancel(self, timeout=30):
        self.state = "cancelled"
        self.ended.set()
        return True

    def results(self, timeout=None):
        self.ended.wait(timeout)
        if self.state == "done":
            return [self.VideoResult(self.video, "done", frames=60, mean_confidence=0.75, low_confidence_share=0.1,
                                     files={"csv": f"{self.out}/clip.posehub.csv"})]
        return [self.VideoResult(self.video, "cancelled", frames=60)]


def run_tab(out: Path, run: Path, video: Path, cancel: bool) -> dict:
    """The Analyse button with a fake gateway and a fake analyze: the cluster asked, the progress, the end."""
    import time

    import posehub.analyze as analyze_mod
    from posehub.ensemble.widget import EnsembleWidget

    made = []

    def fake_analyze(model, videos, *, client, out=None, overwrite=False, **kw):
        made.append(FakeAnalysis(videos, out))
        return made[-1]

    real, analyze_mod.analyze = analyze_mod.analyze, fake_analyze
    try:
        gw = FakeGateway()
        ui = EnsembleWidget(gateway=gw, watch_client=FakeWatchClient())
        tab = ui.analyse_tab
        tab.model.value, tab.videos.value, tab.out.value, tab.workers.value = str(run), str(video), str(out / "o"), 3
        tab.analyse.click()
        end = time.monotonic() + 30
        while not made or tab.cancel.disabled:  # running: Cancel is offered
            assert time.monotonic() < end, tab.message.value
            time.sleep(0.05)
        got = {"running": {"progress": tab.progress.value, "analyse_disabled": tab.analyse.disabled,
                           "message": tab.message.value}}
        if cancel:
            tab.cancel.click()
        else:
            made[0].finish()
        tab._thread.join(30)
        got.update(calls=gw.calls, message=tab.message.value, results=tab.results.value, progress=tab.progress.value,
                   analyse_disabled=tab.analyse.disabled, cancel_disabled=tab.cancel.disabled)
        return got
    finally:
        analyze_mod.analyze = real


def tab_state(tab) -> dict:
    return {"message": tab.message.value, "estimate": tab.estimate.value, "started": tab._thread is not None,
            "analyse_disabled": tab.analyse.disabled}


def steps(out: Path, data: Path) -> dict:
    os.environ["POSEHUB_WORKER_PROFILES"] = json.dumps(PROFILES)
    os.environ["POSEHUB_STORAGE"] = str(out / "no-manifest.json")
    from posehub import account

    account.status = lambda: dict(STATUS)
    from posehub.analyze.plan import make_plan
    from posehub.ensemble.widget import EnsembleWidget

    got: dict = {}
    fake = FakeWatchClient([W1])
    ui = EnsembleWidget(gateway=NoGateway(), watch_client=fake, model="~/runs/m", videos="~/v/*.mp4")
    tab = ui.analyse_tab
    got["titles"] = list(ui.titles)
    got["children"] = [ui.children[0] is ui.train_tab, ui.children[1] is tab]
    got["selected"] = ui.selected_index
    got["fields"] = {"model": tab.model.value, "videos": tab.videos.value,
                     "profiles": [v for _, v in tab.profile.options], "budget": tab.budget.value}
    got["listed_before_opened"] = len(tab.watch_list.children)
    ui.selected_index = 1  # the tab opened: the watches are listed
    got["rows"] = [[c.value if hasattr(c, "value") else c.description for c in row.children]
                   for row in tab.watch_list.children]
    tab.watch_list.children[0].children[1].click()  # Pause
    got["after_pause"] = [tab.watch_list.children[0].children[1].description, tab.watch_message.value]
    tab.watch_list.children[0].children[1].click()  # Resume
    got["after_resume"] = [tab.watch_list.children[0].children[1].description, tab.watch_message.value]
    tab.watch_bucket.value, tab.watch_prefix.value, tab.watch_model.value = "lab", "cam3/", "~/runs/m"
    tab.watch_out.value = "out/"
    tab.watch_create.click()
    got["after_create"] = [len(tab.watch_list.children), tab.watch_message.value]
    got["watch_calls"] = [list(c) for c in fake.calls]

    down = EnsembleWidget(gateway=NoGateway(), watch_client=FakeWatchClient(down="no watch service here"))
    down.selected_index = 1
    got["down"] = [down.analyse_tab.watch_message.value, len(down.analyse_tab.watch_list.children)]

    # bad input: its message, nothing started
    run = out / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"framework": "sleap", "bodyparts": ["snout"], "info": {}}))
    (out / "corrupt.mp4").write_bytes(bytes(range(256)) * 200)
    (out / "empty.mp4").write_bytes(b"")
    video = data / "videos" / "m3v1mp4.mp4"
    cases = {"corrupt": (run, out / "corrupt.mp4"), "empty": (run, out / "empty.mp4"),
             "no_model": (out / "nowhere", video), "not_a_run": (out, video), "no_match": (run, out / "*.avi"),
             "blank": ("", "")}
    got["bad"] = {}
    for name, (model, videos) in cases.items():
        ui = EnsembleWidget(gateway=NoGateway(), watch_client=FakeWatchClient())
        tab = ui.analyse_tab
        tab.model.value, tab.videos.value = str(model), str(videos)
        tab.analyse.click()
        got["bad"][name] = tab_state(tab)

    # the estimate, then the same at $500/h: over the $1.00 left, refused
    ui = EnsembleWidget(gateway=NoGateway(), watch_client=FakeWatchClient())
    tab = ui.analyse_tab
    tab.model.value, tab.videos.value, tab.out.value, tab.workers.value = str(run), str(video), str(out / "o"), 2
    tab.estimate_button.click()
    got["estimate"] = tab_state(tab)
    got["frames"] = sum(b - a for v in make_plan(run, video).runnable for a, b in v.chunks)
    tab.profile.value = "dear"
    tab.analyse.click()
    got["dear"] = tab_state(tab)
    got["gateway_used"] = NoGateway.used

    # the Analyse button with a gateway and analyze that only record: run to the end, or cancelled
    tab.profile.value = "pose-cpu"
    got["run"] = run_tab(out, run, video, cancel=False)
    got["cancelled"] = run_tab(out, run, video, cancel=True)

    # a finished ensemble: its folder prefilled (the members' consensus), unless the user typed a model
    ui = EnsembleWidget(gateway=NoGateway(), watch_client=FakeWatchClient())
    result = SimpleNamespace(id="e1", members=[member(0, "done", 4.0, str(out / "member-0")),
                                               member(1, "done", 2.0, str(out / "member-1"))],
                             dest=str(out / "ensemble-e1"))
    ui.analyse_tab.prefill(result)
    got["prefill"] = [ui.analyse_tab.model.value, ui.analyse_tab.watch_model.value, ui.analyse_tab.model_note.value]
    ui.analyse_tab.model.value = "~/runs/mine"
    ui.analyse_tab.prefill(result)
    got["prefill_typed"] = ui.analyse_tab.model.value
    return got


if __name__ == "__main__":
    print(json.dumps(steps(Path(sys.argv[1]), Path(sys.argv[2]))))
