"""An ensemble's folder as the model of an analysis: its members found, checked, and combined as the ensemble
combines keypoints (pure; the members' predictors are stand-ins here, the real ones in test_analyze_pose.py)."""

import json

import numpy as np
import pytest

from posehub.analyze.members import EnsemblePredictor
from posehub.analyze.plan import AnalyzeError, check_model, make_plan

BODYPARTS = ["snout", "tailbase"]


def ensemble(tmp_path, statuses=("done", "done", "failed"), bodyparts=None, url_root="s3://bucket/alice/ens"):
    folder = tmp_path / "ens"
    folder.mkdir()
    members = []
    for i, status in enumerate(statuses):
        members.append({"index": i, "status": status, "url": f"{url_root}/member-{i}" if status == "done" else ""})
        if status == "done":
            (folder / f"member-{i}").mkdir()
            (folder / f"member-{i}" / "model.json").write_text(json.dumps(
                {"framework": "sleap", "bodyparts": (bodyparts or {}).get(i, BODYPARTS), "info": {}}))
    (folder / "ensemble.json").write_text(json.dumps({"id": "ens-1", "framework": "sleap", "members": members,
                                                      "consensus": {"method": "confmaps", "members": 2}}))
    return folder


def test_an_ensemble_folder_is_a_model_of_its_finished_members(tmp_path):
    folder = ensemble(tmp_path)
    path, spec, record = check_model(str(folder))
    assert path == str(folder) and spec["framework"] == "sleap" and spec["bodyparts"] == BODYPARTS
    # the members where the ensemble folder is now (it was written to a bucket, read here through its mount)
    assert spec["members"] == [str(folder / "member-0"), str(folder / "member-1")]
    assert record["ensemble"]["id"] == "ens-1"
    (tmp_path / "v.mp4").write_bytes(b"x")
    plan = make_plan(folder, tmp_path / "v.mp4", probe=lambda p: 5)
    assert plan.model_record == record and plan.framework == "sleap"


@pytest.mark.parametrize("make, message", [
    (lambda t: ensemble(t, statuses=("failed", "cancelled")), "has no finished member to predict with"),
    (lambda t: ensemble(t, bodyparts={1: ["snout"]}), "differ in tool or body parts"),
])
def test_bad_ensembles_are_refused(tmp_path, make, message):
    with pytest.raises(AnalyzeError, match=message):
        check_model(str(make(tmp_path)))


def test_an_ensemble_without_its_members_is_refused(tmp_path):
    folder = ensemble(tmp_path)
    (folder / "member-1" / "model.json").unlink()
    with pytest.raises(AnalyzeError, match="the ensemble's member member-1 is not in"):
        check_model(str(folder))
    (folder / "ensemble.json").write_text("{not json")
    with pytest.raises(AnalyzeError, match="not a readable ensemble record"):
        check_model(str(folder))


def test_the_consensus_of_members_is_their_weighted_median():
    def member(points, scores):
        return lambda images: (np.array(points, float), np.array(scores, float))

    # 3 members, 1 frame, 2 body parts; the third member missed the tail base
    ens = EnsemblePredictor([member([[[10, 20], [50, 60]]], [[0.9, 0.5]]),
                             member([[[12, 22], [52, 62]]], [[0.1, 0.5]]),
                             member([[[30, 40], [np.nan, np.nan]]], [[0.2, 0.0]])])
    points, scores = ens([np.zeros((4, 4, 3))])
    assert points[0, 0].tolist() == [10, 20]  # the confident member outweighs the two others
    assert points[0, 1].tolist() == [51, 61]  # two equal weights: their middle
    assert scores[0].tolist() == pytest.approx([0.4, 1 / 3])  # the mean, a miss counting 0
    one = EnsemblePredictor([member([[[1, 2], [3, 4]]], [[0.7, 0.6]])])
    p, s = one([np.zeros((4, 4, 3))])
    assert p.tolist() == [[[1, 2], [3, 4]]] and s[0].tolist() == pytest.approx([0.7, 0.6])
