"""The handle's bookkeeping with a stand-in client: what is submitted, states from events and futures,
a worker that leaves, results at the end. The real thing runs in test_dask.py."""

import time

import numpy as np
import pytest

from posehub.ensemble import train_ensemble
from posehub.ensemble.task import MemberFailed, run_member


class FakeFuture:
    def __init__(self, key):
        self.key, self.status, self._cbs, self._result, self._exc = key, "pending", [], None, None

    def add_done_callback(self, fn):
        self._cbs.append(fn)

    def done(self):
        return self.status != "pending"

    def result(self):
        return self._result

    def exception(self):
        return self._exc

    def finish(self, result=None, exc=None, status="finished"):
        self.status, self._result, self._exc = status, result, exc
        for cb in self._cbs:
            cb(self)


class FakeClient:
    def __init__(self, workers):
        self.workers, self.submitted, self.handlers = workers, [], {}

    def scheduler_info(self):
        return {"workers": {a: {"resources": r} for a, r in self.workers.items()}}

    def subscribe_topic(self, topic, handler):
        self.handlers[topic] = handler

    def unsubscribe_topic(self, topic):
        self.handlers.pop(topic)

    def submit(self, fn, job, key, pure, resources, retries):
        self.submitted.append({"fn": fn, "job": job, "key": key, "resources": resources, "retries": retries})
        return FakeFuture(key)


def until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def done_outcome(job, spec_labels):
    test = spec_labels.points[list(job.split.test)] + job.index * 0.5
    return {"status": "done", "member": job.index, "seed": job.seed, "worker": "tcp://b:1", "url": job.dest,
            "metrics": {"all": {"mean_px": 0.5 * job.index, "rmse_px": 0.5 * job.index}},
            "predictions": {"test_points": test, "test_scores": np.ones(test.shape[:-1]), "stride": np.array(1.0)}}


def test_members_from_submit_to_results(tiny_project, tmp_path):
    client = FakeClient({"tcp://a:1": {"GPU": 1}, "tcp://b:1": {"GPU": 1}})
    ens = train_ensemble(str(tiny_project), "sleap", 3, {"epochs": 5}, seeds=[4, 5, 6], client=client,
                         dest=str(tmp_path / "ens"), name="t1", retries=1)
    updates = []
    ens.on_update(lambda e: updates.append([p["state"] for p in e.progress]))
    sub = client.submitted
    assert [s["key"] for s in sub] == ["posehub-member-t1-0", "posehub-member-t1-1", "posehub-member-t1-2"]
    assert all(s["fn"] is run_member and s["resources"] == {"GPU": 1} and s["retries"] == 1 for s in sub)
    jobs = [s["job"] for s in sub]
    assert [j.seed for j in jobs] == [4, 5, 6] and {j.split for j in jobs} == {ens.spec.split}
    assert jobs[2].dest == str(tmp_path / "ens" / "member-2") and jobs[0].labels.fs is None
    assert [p["state"] for p in ens.progress] == ["queued"] * 3

    send = client.handlers["posehub-ensemble-t1"]
    send((0, {"member": 0, "kind": "state", "state": "started", "worker": "tcp://a:1"}))
    send((0, {"member": 0, "kind": "state", "state": "running", "worker": "tcp://a:1", "pid": 4242}))
    send((0, {"member": 0, "kind": "progress", "phase": "training", "epoch": 2, "epochs": 5, "loss": 0.1}))
    send((0, {"member": 0, "kind": "log", "lines": ["epoch 2 done", "saving"]}))
    p = ens.progress[0]
    assert (p["state"], p["attempt"], p["worker"], p["pid"], p["epoch"], p["epochs"], p["phase"]) == (
        "running", 1, "tcp://a:1", 4242, 2, 5, "training")
    assert ens.log_tail(1, member=0) == ["saving"] and ens.log_tail(5) == ["[member 0] epoch 2 done",
                                                                         "[member 0] saving"]

    del client.workers["tcp://a:1"]  # the worker died: the scheduler will run member 0 again
    assert until(lambda: ens.progress[0]["state"] == "retrying")
    send((0, {"member": 0, "kind": "state", "state": "started", "worker": "tcp://b:1"}))
    assert (ens.progress[0]["state"], ens.progress[0]["attempt"], ens.progress[0]["epoch"]) == ("running", 2, 0)

    send((0, {"member": 1, "kind": "state", "state": "started", "worker": "tcp://b:1"}))
    send((0, {"member": 1, "kind": "state", "state": "attempt-failed", "error": "TrainerError: boom"}))
    assert ens.progress[1]["state"] == "retrying" and ens.progress[1]["error"] == "TrainerError: boom"

    futures = ens.futures
    futures[0].finish(done_outcome(jobs[0], ens.spec.labels))
    futures[2].finish(done_outcome(jobs[2], ens.spec.labels))
    assert not ens.done()
    futures[1].finish(exc=MemberFailed("member 1 (seed 5) on tcp://b:1: TrainerError: boom"), status="error")
    assert ens.wait(10)
    assert [p["state"] for p in ens.progress] == ["done", "failed", "done"]
    assert ens.progress[1]["error"].startswith("MemberFailed: member 1 (seed 5)")
    t = ens.results().table()
    assert list(t["status"]) == ["done", "failed", "done", "done"] and list(t["seed"].iloc[:3]) == [4, 5, 6]
    assert t.loc["consensus", "mean px"] == pytest.approx(0.5 * 2 ** 0.5)  # median of 0 and 1 px off in x and y
    assert (tmp_path / "ens" / "ensemble.json").exists() and (tmp_path / "ens" / "label_next.csv").exists()
    assert until(lambda: updates and updates[-1] == ["done", "failed", "done"])
    assert "posehub-ensemble-t1" not in client.handlers  # unsubscribed at the end
    assert "3 sleap member(s), 2 done, 1 failed" in repr(ens)


def test_resources_follow_the_workers_or_the_caller(tiny_project, tmp_path):
    for workers, want in (({"tcp://a:1": {"member": 1}}, {"member": 1}), ({"tcp://a:1": {}}, None)):
        client = FakeClient(workers)
        train_ensemble(str(tiny_project), "sleap", 1, client=client, dest=str(tmp_path / "e"))
        assert client.submitted[0]["resources"] == want
    client = FakeClient({"tcp://a:1": {}})
    train_ensemble(str(tiny_project), "sleap", 1, client=client, dest=str(tmp_path / "e"), resources={"GPU": 2})
    assert client.submitted[0]["resources"] == {"GPU": 2}
