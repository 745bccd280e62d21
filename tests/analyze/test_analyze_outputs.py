"""The files of one video's analysis, built from known arrays (pure builders, and the writer to a local folder
and to a bucket, in the hub's environment; DeepLabCut's .h5 and SLEAP's .slp are in test_analyze_pose.py)."""

import csv
import io
import json
import math

import numpy as np
import pytest

from posehub.analyze import outputs
from posehub.analyze.plan import make_plan
from posehub.pose import record as pose_record

BODYPARTS = ["snout", "tailbase"]


def arrays():
    points = np.array([[[10.0, 20.0], [30.5, 40.25]], [[np.nan, np.nan], [31.0, 41.0]], [[12.0, 22.0], [33.0, 43.0]]])
    scores = np.array([[0.9, 0.8], [0.0, 0.3], [0.6, 0.2]])
    return points, scores


def test_summary_counts_frames_of_low_mean_confidence():
    _, scores = arrays()
    s = outputs.summarize(scores, 0.5)
    assert s["frames"] == 3 and s["mean_confidence"] == pytest.approx(2.8 / 6)
    assert s["low_confidence_frames"] == 2 and s["low_confidence_share"] == pytest.approx(2 / 3)  # means .85 .15 .4
    assert outputs.summarize(scores, 0.4)["low_confidence_frames"] == 1  # below, not at
    assert outputs.summarize(scores, 0.0)["low_confidence_share"] == 0
    assert outputs.summarize(np.array([[np.nan, 1.0]]), 0.6)["low_confidence_frames"] == 1  # NaN counts as 0
    assert math.isnan(outputs.summarize(np.zeros((0, 2)), 0.5)["low_confidence_share"])


def test_posehub_csv_has_a_row_per_frame_and_body_part():
    points, scores = arrays()
    rows = list(csv.reader(io.StringIO(outputs.posehub_csv(points, scores, BODYPARTS))))
    assert rows[0] == ["frame", "bodypart", "x", "y", "confidence"]
    assert rows[1:] == [["0", "snout", "10.000", "20.000", "0.90000"], ["0", "tailbase", "30.500", "40.250", "0.80000"],
                        ["1", "snout", "", "", "0.00000"], ["1", "tailbase", "31.000", "41.000", "0.30000"],
                        ["2", "snout", "12.000", "22.000", "0.60000"], ["2", "tailbase", "33.000", "43.000", "0.20000"]]


def test_dlc_frame_is_deeplabcuts_table():
    points, scores = arrays()
    df = outputs.dlc_frame(points, scores, BODYPARTS)
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    assert list(df.columns) == [("DLC_posehub", bp, c) for bp in BODYPARTS for c in ("x", "y", "likelihood")]
    assert list(df.index) == [0, 1, 2]
    assert df[("DLC_posehub", "tailbase", "y")].tolist() == [40.25, 41.0, 43.0]
    assert df[("DLC_posehub", "snout", "likelihood")].tolist() == [0.9, 0.0, 0.6]
    assert math.isnan(df.loc[1, ("DLC_posehub", "snout", "x")])


@pytest.fixture
def plugin_run(tmp_path):
    """A run of a tool other than SLEAP and DeepLabCut: PoseHub's CSV and the record only."""
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"framework": "mytool", "bodyparts": BODYPARTS, "info": {}}))
    (d / "run.json").write_text(json.dumps({"framework": "mytool", "seed": 7, "metrics": {"all": {"mean_px": 2.5}}}))
    video = tmp_path / "day1" / "mouse.mp4"
    video.parent.mkdir()
    video.write_bytes(b"0123456789" * 1000)
    return d, video


def chunk_records():
    return [{"start": 0, "stop": 2, "worker": "tcp://w1", "attempts": 1, "seconds": 1.5, "load_s": 1.0,
             "device": "cpu", "threads": 1},
            {"start": 2, "stop": 3, "worker": "tcp://w2", "attempts": 2, "seconds": 0.5, "load_s": 0.0,
             "device": "cpu", "threads": 1}]


@pytest.mark.parametrize("where", ["beside", "bucket"])
def test_write_puts_the_files_and_the_record(plugin_run, where):
    import fsspec

    run, video = plugin_run
    fs = fsspec.filesystem("memory")
    out = None if where == "beside" else "memory://lab/analyses/week1"
    plan = make_plan(run, video, out=out, out_fs=fs if out else None, probe=lambda p: 3, low_confidence=0.5,
                     name="a1")
    points, scores = arrays()
    result = outputs.write(plan, plan.videos[0], points, scores, chunk_records()[::-1])
    folder = str(video.parent) + "/" if out is None else out + "/"
    assert result.files == {"csv": folder + "mouse.posehub.csv", "record": folder + "mouse.analysis.json"}
    read = (lambda p: open(p, "rb").read()) if out is None else fs.cat_file
    assert read(result.files["csv"]).decode() == outputs.posehub_csv(points, scores, BODYPARTS)
    rec = json.loads(read(result.files["record"]))
    assert (result.status, result.frames, result.workers) == ("done", 3, ["tcp://w1", "tcp://w2"])
    assert result.mean_confidence == pytest.approx(2.8 / 6) and result.low_confidence_share == pytest.approx(2 / 3)
    assert rec["analysis"] == "a1"
    assert rec["video"] == {"path": str(video), "sha256": pose_record.file_sha256(str(video)), "frames": 3}
    assert rec["model"] == {"folder": str(run), "framework": "mytool", "bodyparts": BODYPARTS,
                            "run": {"framework": "mytool", "seed": 7, "metrics": {"all": {"mean_px": 2.5}}}}
    env = pose_record.environment()
    assert rec["environment"]["lock_sha256"] == env["lock_sha256"] and rec["environment"]["packages"] == env["packages"]
    assert rec["parameters"] == plan.params
    assert rec["chunks"] == chunk_records()  # in frame order
    assert rec["workers"] == ["tcp://w1", "tcp://w2"] and rec["predict_s"] == 2.0 and rec["frames"] == 3
    assert rec["low_confidence"] == {"threshold": 0.5, "rule": outputs.LOW_CONFIDENCE_RULE, "frames": 2,
                                     "share": pytest.approx(2 / 3)}
    assert rec["files"] == result.files


def test_the_record_is_strict_json(plugin_run):
    run, video = plugin_run
    plan = make_plan(run, video, probe=lambda p: 0 + 1)
    summary = outputs.summarize(np.zeros((0, 2)), 0.5)
    rec = outputs.record(plan, plan.videos[0], [], summary, "abc", {}, {"python": "3"})
    assert rec["low_confidence"]["share"] is None and rec["mean_confidence"] is None
    json.dumps(rec, allow_nan=False)
