"""Ensembles on a real local Dask cluster (2 worker processes, ``member=1`` each), in the pose image's
environment: a 3-member SLEAP ensemble end to end, cancel, and failures (a killed worker, a member that
keeps failing). Tiny settings: 20 open-field frames, 1 epoch at scale 0.25, 2 video frames."""

import csv
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytestmark = pytest.mark.slow


def scenario(mode, pose_python, openfield, tmp_path, timeout=420) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "extensions"))
    r = subprocess.run([str(pose_python), str(HERE / "scenarios.py"), mode, str(tmp_path), str(openfield)],
                       capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-6000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_an_ensemble_end_to_end(pose_python, openfield, tmp_path):
    got = scenario("e2e", pose_python, openfield, tmp_path)
    assert got["resources"] == {"member": 1}
    t = got["table"]
    assert list(t) == ["member 0", "member 1", "member 2", "consensus"]
    assert [t[k]["status"] for k in t] == ["done"] * 4 and [t[f"member {i}"]["seed"] for i in range(3)] == [0, 1, 2]
    for row in t.values():
        assert math.isfinite(row["mean px"]) and math.isfinite(row["RMSE px"]) and row["RMSE px"] >= row["mean px"]
    assert [(p["state"], p["attempt"], p["epoch"], p["epochs"]) for p in got["progress"]] == [("done", 1, 1, 1)] * 3
    assert got["logs"] > 0
    assert [0, "running", 1] in got["seen"] and [2, "done", 1] in got["seen"]  # on_update saw it happen

    dest = tmp_path / "ens"
    assert sorted(got["files"]) == ["consensus.csv", "ensemble.json", "label_next.csv", "split.json"]
    doc = json.loads((dest / "ensemble.json").read_text())
    assert doc["seeds"] == [0, 1, 2] and doc["split"]["test"] == got["test_frames"]
    for i, m in enumerate(doc["members"]):
        member = dest / f"member-{i}"
        assert m["url"] == str(member) and m["status"] == "done" and m["metrics"]["all"]["n"] >= 0
        assert {"model.json", "metrics.json", "run.json", "split.json", "predictions.npz"} <= {
            p.name for p in member.iterdir()}
        # every member was tested on the same frames: the ensemble's split
        assert json.loads((member / "split.json").read_text())["test"] == got["test_frames"]
        assert json.loads((member / "run.json").read_text())["seed"] == i
    assert doc["consensus"]["method"] == got["method"] == "confmaps"  # SLEAP members give their confidence maps

    rows = list(csv.DictReader((dest / "consensus.csv").open()))
    assert [(r["source"], int(r["frame"])) for r in rows] == (
        [("test", i) for i in got["test_frames"]] + [("video", i) for i in got["video_frames"]])
    assert len(got["video_frames"]) == 2 and got["video_frames"][0] == 0  # evenly spread, from the first frame

    ranked = got["label_next"]
    assert [r["rank"] for r in ranked] == list(range(1, 7))
    scores = [r["score_px"] for r in ranked]
    assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) and s >= 0 for s in scores)
    assert {(r["source"], r["frame"]) for r in ranked} == {(r["source"], int(r["frame"])) for r in rows}
    with (dest / "label_next.csv").open() as f:
        assert [int(r["rank"]) for r in csv.DictReader(f)] == list(range(1, 7))


def test_cancel_stops_the_training_processes(pose_python, openfield, tmp_path):
    got = scenario("cancel", pose_python, openfield, tmp_path)
    assert got["confirmed"] and got["gone"] and got["alive_after"] == [False, False]
    assert got["cancel_s"] < 10, got["cancel_s"]
    assert len(got["pids"]) == 2 and got["done"]
    assert [p["state"] for p in got["progress"]] == ["cancelled"] * 3
    assert got["progress"][2]["attempt"] == 0  # queued: never started
    assert [r["status"] for r in got["table"].values()] == ["cancelled"] * 3 + ["unavailable"]
    assert got["free_after"]  # the workers took a new task at once
    assert json.loads((tmp_path / "ens" / "ensemble.json").read_text())["consensus"]["members"] == 0


def test_a_killed_worker_and_a_failing_member(pose_python, openfield, tmp_path):
    got = scenario("failures", pose_python, openfield, tmp_path)
    assert got["child_gone"]  # the kernel killed the training when its worker died
    p = got["progress"]
    assert (p[0]["state"], p[0]["attempt"]) == ("done", 2) and p[0]["worker"] != got["killed_worker"]
    assert (p[1]["state"], p[1]["attempt"]) == ("done", 1)
    assert (p[2]["state"], p[2]["attempt"]) == ("failed", 2)  # retries=1: two attempts
    assert got["errors"][2].startswith("MemberFailed: member 2 (seed 2)") and "FileExistsError" in got["errors"][2]
    t = got["table"]
    assert [t[k]["status"] for k in t] == ["done", "done", "failed", "done"]
    assert math.isfinite(t["consensus"]["mean px"]) and got["members_ok"] == 2
    assert len(got["label_next"]) == 4  # the test frames (no video here)
