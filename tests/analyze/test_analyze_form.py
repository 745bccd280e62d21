"""The "Analyse videos" tab's checks, tables and watched folders (posehub.analyze.form), and the tab itself built
headless (widget_steps.py, in the pose environment) with a fake watch client and a gateway that must not be
used: no hub, no cluster.

    .venv/bin/python -m pytest tests/analyze/test_analyze_form.py
"""

import json
import math
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from posehub.analyze import form
from widget_steps import W1, W2, FakeWatchClient, member  # noqa: E402 - beside this file

PROFILES = [{"slug": "pose-cpu", "display_name": "Pose (CPU)", "cpu": 1, "memory": "2G", "price_per_hour": 0.2},
            {"slug": "gpu", "display_name": "One GPU", "cpu": 8, "memory": "32G", "gpus": 1, "price_per_hour": 1.21}]
GOOD = dict(model="~/buckets/home/runs/sleap-1", videos="~/buckets/lab/videos/*.mp4", out="", profile="pose-cpu",
            profiles=PROFILES, workers=2)
STATUS = {"period": "2026-12", "budget": "300.00", "spent": "299.00", "remaining": "1.00", "percent_used": "99.7"}


# ---------------------------------------------------------------- the fields


def test_a_good_tab_becomes_a_request():
    req, errors = form.check(**GOOD)
    assert errors == []
    assert req == form.Request("~/buckets/home/runs/sleap-1", "~/buckets/lab/videos/*.mp4", None, PROFILES[0], 2)
    req, _ = form.check(**{**GOOD, "videos": " a.mp4 \n\n b/*.avi\n", "out": " ~/out ", "overwrite": True})
    assert req.videos == ["a.mp4", "b/*.avi"] and req.out == "~/out" and req.overwrite


@pytest.mark.parametrize("change, message", [
    ({"model": "  "}, "Model: give the folder of a PoseHub run (with model.json)"),
    ({"model": "s3://lab/runs/x"}, "Model: give the run folder as a path the workers see (under ~/buckets), not a URL"),
    ({"videos": "\n"}, "Videos: give a video, a folder of videos or a glob, e.g. ~/buckets/lab/videos/*.mp4"),
    ({"workers": 0}, "Workers must be from 1 to 32, got 0"),
    ({"workers": "many"}, "Workers must be a whole number from 1 to 32, got 'many'"),
    ({"profile": "tpu"}, "Worker profile: pick one of pose-cpu, gpu, got 'tpu'"),
    ({"profiles": []}, "Worker profile: no worker profile is open to you"),
])
def test_each_bad_field_is_named(change, message):
    req, errors = form.check(**{**GOOD, **change})
    assert req is None
    assert any(message in e for e in errors), errors


def test_the_budget_refuses_an_estimate_over_what_is_left():
    assert form.budget_refusal(Decimal("0.99"), STATUS) == ""
    assert form.budget_refusal(Decimal("1.00"), STATUS) == ""
    assert form.budget_refusal(Decimal("1.01"), STATUS) == (
        "Nothing was started: the estimate, $1.01, is more than what is left of your budget for 2026-12, $1.00. "
        "Analyse fewer videos, pick a cheaper worker profile, or ask your PoseHub admin for more budget.")
    assert form.budget_refusal(Decimal("0.01"), {**STATUS, "remaining": "-2.50"}).startswith(
        "Nothing was started: the estimate, $0.01, is more than what is left of your budget for 2026-12, $-2.50.")
    # unknown: not refused here (the gateway checks the budget when the cluster starts), and said
    assert form.budget_refusal(Decimal("5"), None) == "" and form.budget_refusal(5, {"remaining": "?"}) == ""
    assert form.budget_note(None).startswith("Budget unknown") and form.budget_note(STATUS) == ""


def test_paths_of_another_account_are_said_as_such(tmp_path, monkeypatch):
    """A folder of mode 0700 of another account, as this account (root here) would see it: entering it is refused."""
    secret = tmp_path / "bob"
    secret.mkdir()
    (secret / "clip.mp4").write_bytes(b"x")
    real_stat, real_access = os.stat, os.access

    def stat(p, *a, **kw):
        if str(p).startswith(str(secret) + os.sep):
            raise PermissionError(13, "Permission denied", str(p))
        return real_stat(p, *a, **kw)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(secret) else real_access(p, mode))
    assert form.access_problems(str(secret / "run"), [str(secret / "clip.mp4"), str(secret / "*.mp4"),
                                                      str(tmp_path / "*.mp4")]) == [
        f"model folder {secret}/run: you may not read {secret} (it is another account's, or its permissions keep "
        "you out)",
        f"videos {secret}/clip.mp4: you may not read {secret} (it is another account's, or its permissions keep "
        "you out)",
        f"videos {secret}/*.mp4: you may not read {secret} (it is another account's, or its permissions keep "
        "you out)"]
    # what does not exist is for the plan to say
    assert form.access_problems(str(tmp_path / "nowhere"), str(tmp_path / "none" / "*.avi")) == []


# ---------------------------------------------------------------- the tables


def test_progress_rows():
    progress = [{"video": "/v/a.mp4", "name": "a", "status": "running", "chunks_done": 1, "chunks": 4,
                 "frames_done": 500, "frames": 1800, "workers": ["tcp://1", "tcp://2"], "error": ""},
                {"video": "/v/b.mp4", "name": "b", "status": "failed", "chunks_done": 0, "chunks": 0,
                 "frames_done": 0, "frames": 0, "workers": [], "error": "cannot read b.mp4"}]
    assert form.progress_rows(progress) == [
        {"video": "a", "state": "running", "chunks done": "1/4", "frames done": "500/1,800", "workers": 2, "error": ""},
        {"video": "b", "state": "failed", "chunks done": "0/0", "frames done": "0/0", "workers": 0,
         "error": "cannot read b.mp4"}]


def test_result_rows_and_their_html():
    from posehub.analyze.outputs import VideoResult

    done = VideoResult("/v/a<1>.mp4", "done", frames=90, mean_confidence=0.8123, low_confidence_share=0.125,
                       files={"csv": "/out/a.posehub.csv", "record": "/out/a.analysis.json"})
    failed = VideoResult("/v/b.mp4", "failed", "frames 0..24: RuntimeError: boom")
    rows = form.result_rows([done, failed])
    assert rows[0] == {"video": "a<1>.mp4", "status": "done", "frames": 90, "mean confidence": "0.812",
                       "low-confidence share": "12.5 %", "output files": "/out/a.posehub.csv\n/out/a.analysis.json",
                       "error": ""}
    assert rows[1]["mean confidence"] == "–" and rows[1]["low-confidence share"] == "–" and rows[1]["frames"] == 0
    page = form.table_html(rows, "posehub-ana-results-table")
    assert page.startswith("<table class='posehub-ana-results-table'")
    assert "<td>a&lt;1&gt;.mp4</td>" in page and "/out/a.posehub.csv<br>/out/a.analysis.json" in page
    assert "<th>error</th>" in page and "RuntimeError: boom" in page
    assert "<th>error</th>" not in form.table_html(rows[:1])  # no error, no column
    assert form.table_html([]) == ""


# ---------------------------------------------------------------- the model of a finished ensemble


BUCKETS = {"home": SimpleNamespace(url="s3://posehub-home/alice/", path="/home/alice/buckets/home", mounted=True),
           "raw": SimpleNamespace(url="s3://raw/", path="/home/alice/buckets/raw", mounted=False)}


def test_a_finished_ensemble_at_the_path_the_workers_see():
    members = [member(0, "done", 5.0, "s3://posehub-home/alice/ensembles/e1/member-0"),
               member(1, "done", 3.5, "s3://posehub-home/alice/ensembles/e1/member-1"),
               member(2, "failed", math.nan, "")]
    result = SimpleNamespace(id="e1", members=members, dest="s3://posehub-home/alice/ensembles/e1")
    path, note = form.model_from_ensemble(result, BUCKETS)
    assert path == "/home/alice/buckets/home/ensembles/e1"
    assert note == ("Ensemble e1: every frame is predicted by its 2 finished member(s) and their consensus is kept "
                    "(the confidence-weighted median of their points).")
    # local buckets: the folder is a path already
    assert form.mounted_path("/data/buckets/home/alice/e1", {}) == "/data/buckets/home/alice/e1"
    assert form.mounted_path("s3://posehub-home/alice", BUCKETS) == "/home/alice/buckets/home"
    assert form.mounted_path("s3://raw/x", BUCKETS) is None  # not mounted
    path, note = form.model_from_ensemble(SimpleNamespace(id="e2", members=members, dest="s3://raw/e2"), BUCKETS)
    assert path == "" and "Ensemble e2 is at s3://raw/e2, which the workers do not see" in note
    path, note = form.model_from_ensemble(SimpleNamespace(id="e3", members=[member(0, "failed", 1, "")], dest="/x"),
                                          BUCKETS)
    assert path == "" and "No member of ensemble e3 finished: give a run folder" in note


# ---------------------------------------------------------------- watched folders, through a fake client




def test_watches_list_pause_resume():
    fake = FakeWatchClient([W1, W2])
    ws = form.Watches(fake)
    assert not ws.loaded and ws.refresh() and ws.loaded and not ws.error
    rows = ws.rows()
    assert rows[0] == {"id": 1, "folder": "lab/videos/incoming/", "model": "~/buckets/home/runs/m1",
                       "profile": "pose-cpu", "output": "analyses/", "state": "active",
                       "videos": "3 done · 1 failed · 2 queued · 1 running", "action": "Pause"}
    assert rows[1]["state"] == "paused (budget used up)" and rows[1]["action"] == "Resume"
    assert rows[1]["videos"] == "0 done · 0 failed · 0 queued · 0 running"
    assert ws.act(1, "Pause") and ws.rows()[0]["action"] == "Resume"
    assert ws.message == "Paused lab/videos/incoming/: its new videos wait until you resume it."
    assert ws.act(2, "Resume") and ws.rows()[1]["state"] == "active" and ws.message == "Resumed lab/cam2/."
    assert fake.calls == [("list",), ("pause", 1), ("resume", 2)]
    assert not ws.pause(9) and ws.error and ws.message == "Could not pause watch 9: no watch 9"


def test_watch_a_folder():
    fake = FakeWatchClient()
    ws = form.Watches(fake)
    assert ws.refresh() and ws.message == "You watch no folder yet."
    args = dict(bucket="lab", prefix="videos/new/", model="~/buckets/home/runs/m1", profile="gpu", profiles=PROFILES,
                out_prefix="analyses/")
    assert ws.create(**args) and not ws.error
    assert fake.calls[-1] == ("create", "lab", "videos/new/", "~/buckets/home/runs/m1", "gpu", "analyses/")
    assert ws.message == ("Watching lab/videos/new/: each new video there is analysed with ~/buckets/home/runs/m1 on "
                          "'gpu' workers, into analyses/.")
    assert [r["folder"] for r in ws.rows()] == ["lab/videos/new/"]
    # bad fields: said, nothing sent
    n = len(fake.calls)
    assert not ws.create(**{**args, "bucket": "", "model": " ", "profile": "tpu", "out_prefix": ""})
    assert ws.error and ws.message.startswith("Nothing was watched:\n• Bucket: pick the bucket")
    assert "• Model: give" in ws.message and "• Worker profile: pick one of pose-cpu, gpu, got 'tpu'" in ws.message
    assert "• Output prefix: give where the analyses go" in ws.message
    assert len(fake.calls) == n
    # the service says no: its message
    assert not ws.create(**{**args, "bucket": "readonly"})
    assert ws.message == ("Could not watch readonly/videos/new/: bucket readonly is read-only for you: pick an output "
                          "prefix in another bucket")


def test_watch_errors_are_shown_not_raised():
    ws = form.Watches(FakeWatchClient([W1], down="the watch service at http://127.0.0.1:1 cannot be reached: refused"))
    assert not ws.refresh() and ws.error and not ws.loaded
    assert ws.message == ("Could not list your watched folders: the watch service at http://127.0.0.1:1 cannot be "
                          "reached: refused")
    assert not ws.resume(1) and ws.message.startswith("Could not resume watch 1: the watch service")

    class Broken:
        def list_watches(self):
            raise KeyError("counts")

    ws = form.Watches(Broken())
    assert not ws.refresh() and ws.message == "Could not list your watched folders: KeyError: 'counts'"


def test_without_the_watch_module_every_call_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "posehub.watch.client", None)  # import fails
    monkeypatch.delitem(sys.modules, "posehub.watch", raising=False)
    ws = form.Watches()
    assert not ws.refresh() and ws.error
    assert ws.message.startswith("Could not list your watched folders: watched folders are not available in this "
                                 "PoseHub (")


# ---------------------------------------------------------------- the tab, headless (the pose environment)


@pytest.fixture(scope="module")
def tab(pose_python, openfield, tmp_path_factory) -> dict:
    """widget_steps.py's clicks through the tab, in the pose environment (ipywidgets, OpenCV)."""
    out = tmp_path_factory.mktemp("widget")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "extensions"))
    r = subprocess.run([str(pose_python), str(Path(__file__).with_name("widget_steps.py")), str(out), str(openfield)],
                       capture_output=True, text=True, timeout=300, cwd=out, env=env)
    assert r.returncode == 0, r.stderr[-6000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_widget_has_the_two_tabs(tab):
    assert tab["titles"] == ["Train ensemble", "Analyse videos"] and tab["children"] == [True, True]
    assert tab["selected"] == 0
    f = tab["fields"]
    assert f["model"] == "~/runs/m" and f["videos"] == "~/v/*.mp4" and f["profiles"] == ["pose-cpu", "gpu", "dear"]
    assert "Budget for 2026-12: $1.00 left of $300.00" in f["budget"]


def test_the_tab_lists_pauses_resumes_and_creates_watches(tab):
    assert tab["listed_before_opened"] == 0  # listed when the tab is opened, not when the notebook builds it
    (row,) = tab["rows"]
    assert "lab/videos/incoming/ → analyses/ · model ~/buckets/home/runs/m1 · pose-cpu · active" in row[0]
    assert "3 done · 1 failed · 2 queued · 1 running" in row[0] and row[1] == "Pause"
    assert tab["after_pause"][0] == "Resume" and "Paused lab/videos/incoming/" in tab["after_pause"][1]
    assert tab["after_resume"][0] == "Pause" and "Resumed lab/videos/incoming/." in tab["after_resume"][1]
    assert tab["after_create"][0] == 2 and "Watching lab/cam3/: each new video" in tab["after_create"][1]
    assert tab["watch_calls"] == [["list"], ["pause", 1], ["resume", 1],
                                  ["create", "lab", "cam3/", "~/runs/m", "pose-cpu", "out/"]]
    message, rows = tab["down"]
    assert "Could not list your watched folders: no watch service here" in message and rows == 0


@pytest.mark.parametrize("case, message", [
    ("corrupt", "corrupt.mp4"), ("empty", "empty.mp4"), ("no_model", "nowhere does not exist"),
    ("not_a_run", "is not a PoseHub run folder (no model.json)"), ("no_match", "no videos match "),
    ("blank", "• Model: give the folder of a PoseHub run"),
])
def test_bad_input_is_said_and_starts_nothing(tab, case, message):
    got = tab["bad"][case]
    assert got["message"].startswith("<div style='color:#b00") and "Nothing was started:" in got["message"]
    assert message in got["message"], got["message"]
    assert not got["started"] and not got["analyse_disabled"] and got["estimate"] == ""


def test_bad_video_messages_name_the_file(tab):
    assert "empty.mp4" in tab["bad"]["empty"]["message"] and "corrupt.mp4" in tab["bad"]["corrupt"]["message"]
    assert tab["gateway_used"] == []  # no case (nor the refusal below) touched the gateway


def test_the_estimate_then_the_budget_refusal(tab):
    frames, est = tab["frames"], tab["estimate"]
    assert frames > 2000 and not est["started"]
    assert f"Estimate: {frames:,} frames of 1 video(s) in 5 chunk(s) on 2 CPU worker(s)" in est["estimate"]
    assert "worker-hours, about $0.0" in est["estimate"] and "Press Analyse to start" in est["message"]
    dear = tab["dear"]
    assert not dear["started"] and "Estimate: " in dear["estimate"]  # shown with the refusal
    assert "Nothing was started: the estimate, $" in dear["message"]
    assert "is more than what is left of your budget for 2026-12, $1.00." in dear["message"]


def test_a_finished_ensemble_prefills_its_folder(tab):
    model, watch_model, note = tab["prefill"]
    assert model.endswith("/ensemble-e1") and watch_model == model
    assert "Ensemble e1: every frame is predicted by its 2 finished member(s)" in note
    assert tab["prefill_typed"] == "~/runs/mine"


def test_the_analyse_button_starts_a_cluster_shows_progress_and_results(tab):
    run = tab["run"]
    assert "<td>m3v1mp4</td><td>running</td><td>0/1</td><td>0/60</td><td>1</td>" in run["running"]["progress"]
    assert run["running"]["analyse_disabled"]
    assert "Cluster fake.c1: 3 worker(s) of &#x27;Pose (CPU)&#x27; starting; 1 video(s) in 5 chunk(s)" in \
        run["running"]["message"]
    assert run["calls"] == [["submit", "pose-cpu"], ["connect", "fake.c1"], ["scale", 3], ["get_client"],
                            ["client.close"], ["shutdown"]]
    assert "Done: 1 of 1 video(s) analysed. The files are listed per video below." in run["message"]
    assert "<td>m3v1mp4.mp4</td><td>done</td><td>60</td><td>0.750</td><td>10.0 %</td><td>" in run["results"]
    assert "<td>m3v1mp4</td><td>done</td><td>1/1</td><td>60/60</td>" in run["progress"]
    assert not run["analyse_disabled"] and run["cancel_disabled"]


def test_cancel_stops_the_analysis_and_the_cluster(tab):
    c = tab["cancelled"]
    assert c["calls"][-1] == ["shutdown"]
    assert "Cancelled: 0 of 1 video(s) analysed, 1 cancelled; every chunk stopped. The videos already written are " \
           "kept (listed below)." in c["message"]
    assert "<td>m3v1mp4.mp4</td><td>cancelled</td>" in c["results"]
    assert not c["analyse_disabled"] and c["cancel_disabled"]


def test_done_line():
    from posehub.analyze.outputs import VideoResult

    done, failed, stopped = VideoResult("a", "done"), VideoResult("b", "failed", "x"), VideoResult("c", "cancelled")
    assert form.done_line([done, failed]) == "Done: 1 of 2 video(s) analysed, 1 failed. The files are listed per " \
                                             "video below."
    assert form.done_line([done, stopped], False) == (
        "Cancelled: 1 of 2 video(s) analysed, 1 cancelled; some workers did not confirm in time (the cluster is shut "
        "down anyway). The videos already written are kept (listed below).")
