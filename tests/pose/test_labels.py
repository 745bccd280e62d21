"""The labels model, split, metrics and run record: pure code, on the real open-field labels."""

import json
import math

import numpy as np
import pytest

from posehub.pose import labels as L
from posehub.pose import metrics, record
from posehub.pose.split import Split, split

CSV = "labeled-data/m4s1/CollectedData_Pranav.csv"


def test_open_field_labels(openfield):
    lab = L.load(str(openfield / CSV))
    assert lab.bodyparts == ["snout", "leftear", "rightear", "tailbase"]
    assert len(lab) == 116 and lab.points.shape == (116, 4, 2)
    assert lab.frames[0] == "labeled-data/m4s1/img0000.png"
    assert lab.points[0, 0].tolist() == pytest.approx([21.521, 265.428])
    assert lab.scorer == "Pranav" and lab.root == str(openfield)
    img = lab.read_image(0)
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8


def test_project_folder_and_fsspec_url(openfield):
    a = L.load(str(openfield))
    b = L.load("file://" + str(openfield / CSV))
    assert a.frames == b.frames and np.array_equal(a.points, b.points, equal_nan=True)
    assert b.read_image(3).shape == (480, 640, 3)


def test_round_trip_through_dlc_csv(openfield):
    lab = L.load(str(openfield / CSV))
    again = L.parse_dlc_csv(lab.to_dlc_csv(), root=lab.root)
    assert again.frames == lab.frames and again.bodyparts == lab.bodyparts
    assert np.allclose(again.points, lab.points, equal_nan=True)
    assert again.fingerprint() == lab.fingerprint()


def test_three_column_index_and_missing_points():
    text = ("scorer,,,A,A,A,A\nbodyparts,,,nose,nose,tail,tail\ncoords,,,x,y,x,y\n"
            "labeled-data,v1,img0.png,1,2,,\nlabeled-data,v1,img1.png,3,4,5,6\n")
    lab = L.parse_dlc_csv(text)
    assert lab.frames == ["labeled-data/v1/img0.png", "labeled-data/v1/img1.png"]
    assert np.isnan(lab.points[0, 1]).all() and lab.points[1, 1].tolist() == [5, 6]


@pytest.mark.parametrize("text,message", [
    ("a,b\n", "x.csv: not a DeepLabCut labels file (expected the header rows scorer, bodyparts, coords; found 1 rows)"),
    ("scorer,A,A\nindividuals,m1,m1\nbodyparts,n,n\ncoords,x,y\nimg.png,1,2\n",
     "x.csv: a multi-animal DeepLabCut project (it has an 'individuals' row); PoseHub's trainers take single-animal labels"),
    ("scorer,A,A\nbodyparts,n,n\ncoords,x,y\nimg.png,1,oops\n", "x.csv: line 4, n y: 'oops' is not a number"),
    ("scorer,A,A\nbodyparts,n,n\ncoords,x,y\n", "x.csv: no labelled frames"),
    ("scorer,A,A\nbodyparts,n,n\ncoords,x,y\nimg.png,,\n", "x.csv: no keypoint is labelled"),
    ("scorer,A,A\nbodyparts,n,n\ncoords,x,y\nimg.png,1,2\nimg.png,1,2\n", "x.csv: frame 'img.png' is labelled twice"),
    ("scorer,A,A\nbodyparts,n,m\ncoords,x,y\nimg.png,1,2\n", "x.csv: each body part needs an x and a y column (incomplete: n, m)"),
    ("foo,A,A\nbar,n,n\nbaz,x,y\nimg.png,1,2\n",
     "x.csv: not a DeepLabCut labels file: the first column of the header rows must be scorer, bodyparts, coords "
     "(found ['foo', 'bar', 'baz'])"),
])
def test_bad_labels_files(text, message):
    with pytest.raises(L.LabelsError) as e:
        L.parse_dlc_csv(text, source="x.csv")
    assert str(e.value) == message


def test_missing_file_and_frame(tmp_path, openfield):
    with pytest.raises(L.LabelsError, match=r"nothere.csv: no such labels file"):
        L.load(str(tmp_path / "nothere.csv"))
    with pytest.raises(L.LabelsError, match="no labeled-data/\\*/CollectedData_\\*.csv"):
        L.load(str(tmp_path))
    lab = L.load(str(openfield / CSV))
    lab.root = str(tmp_path)
    with pytest.raises(L.LabelsError, match="frame 'labeled-data/m4s1/img0000.png' not found"):
        lab.read_image(0)


def test_split_is_deterministic_and_saved(openfield):
    lab = L.load(str(openfield / CSV))
    a, b, c = split(lab, 0.8, seed=1), split(lab, 0.8, seed=1), split(lab, 0.8, seed=2)
    assert a == b and a != c
    assert len(a.train) == 93 and len(a.test) == 23 and not set(a.train) & set(a.test)
    assert sorted(a.train + a.test) == list(range(116))
    assert Split.from_json(a.to_json()) == a
    assert a.test_frames == tuple(lab.frames[i] for i in a.test)
    # the exact frames for seed 0 do not change between releases (results stay comparable)
    assert split(lab, 0.8, seed=0).test == (7, 14, 29, 31, 33, 38, 41, 48, 54, 56, 59, 63, 69, 73, 76, 77, 78, 79, 95,
                                            102, 103, 104, 115)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_split_bad_fraction(openfield, fraction):
    lab = L.load(str(openfield / CSV))
    with pytest.raises(L.LabelsError, match="train_fraction must be between 0 and 1"):
        split(lab, fraction)


def test_metrics_by_hand():
    truth = np.array([[[0, 0], [10, 10]], [[0, 0], [np.nan, np.nan]]], float)
    pred = np.array([[[3, 4], [10, 10]], [[6, 8], [1, 1]]], float)
    r = metrics.evaluate(pred, truth, ["a", "b"])
    assert r["per_bodypart"]["a"]["mean_px"] == pytest.approx(7.5)  # 5 and 10
    assert r["per_bodypart"]["a"]["rmse_px"] == pytest.approx(math.sqrt((25 + 100) / 2))
    assert r["per_bodypart"]["b"]["mean_px"] == 0 and r["per_bodypart"]["b"]["n"] == 1
    assert r["all"]["mean_px"] == pytest.approx(5.0) and r["all"]["n"] == 3
    # a keypoint not predicted is missed, not an error of 0
    pred[0, 0] = np.nan
    r = metrics.evaluate(pred, truth, ["a", "b"])
    assert r["per_bodypart"]["a"]["missed"] == 1 and r["per_bodypart"]["a"]["mean_px"] == pytest.approx(10)
    with pytest.raises(ValueError, match="must both be"):
        metrics.evaluate(pred[:1], truth, ["a", "b"])


def test_run_record(openfield, tmp_path):
    lab = L.load(str(openfield / CSV))
    s = split(lab, 0.8, seed=3)
    h = record.file_sha256(str(openfield / CSV))
    rec = record.make_record(framework="sleap", params={"epochs": 1}, seed=3, split=s, labels=lab,
                             inputs={CSV: h}, weights="scratch")
    record.write(rec, tmp_path / "run.json")
    back = json.loads((tmp_path / "run.json").read_text())
    assert back["split"]["test_frames"] == list(s.test_frames) and back["seed"] == 3
    assert back["inputs_sha256"][CSV] == h and len(h) == 64
    assert len(back["environment"]["lock_sha256"]) == 64 and "numpy" in back["environment"]["packages"]
    assert back["labels"]["sha256"] == lab.fingerprint() and back["weights"] == "scratch"
