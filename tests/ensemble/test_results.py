"""An ensemble's results from what its members returned: tables, consensus, files. No Dask, no training."""

import csv
import json
import math

import numpy as np
import pytest

from posehub.ensemble.results import build, write
from posehub.ensemble.spec import validate

VIDEO_FRAMES = [0, 50, 99]


def outcome(spec, member, offset=0.0, far=None, missing=None, status="done"):
    """A member that predicts the labels plus ``offset`` px; ``far``: (source, row, bodypart) put 120 px away."""
    if status != "done":
        return {"status": status, "seed": spec.seeds[member], "attempts": 3, "error": "KilledWorker: ..."}
    lab = spec.labels
    test = lab.points[list(spec.split.test)] + offset
    rng = np.random.default_rng(member)
    video = np.tile([[100.0, 100.0]], (len(VIDEO_FRAMES), len(lab.bodyparts), 1)) + rng.normal(0, 0.3, (3, 4, 2))
    for arr, src in ((test, "test"), (video, "video")):
        if far and far[0] == src:
            arr[far[1], far[2]] += [120, 0]
        if missing and missing[0] == src:
            arr[missing[1], missing[2]] = np.nan
    err = float(np.nanmean(np.sqrt(((test - lab.points[list(spec.split.test)]) ** 2).sum(-1))))
    return {"status": "done", "seed": spec.seeds[member], "attempts": 1, "worker": f"tcp://w{member}:1",
            "url": spec.member_dest(member), "metrics": {"all": {"mean_px": err, "rmse_px": err}},
            "predictions": {"test_frames": np.array(spec.split.test), "test_points": test,
                            "test_scores": np.full(test.shape[:-1], 0.9), "stride": np.array(1.0),
                            "video_frames": np.array(VIDEO_FRAMES), "video_points": video,
                            "video_scores": np.full(video.shape[:-1], 0.8)}}


@pytest.fixture
def spec(tiny_project, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    return validate(str(tiny_project), "sleap", 3, {"epochs": 1}, [10, 11, 12], dest=str(tmp_path / "ens"),
                    video=str(video), video_frames=3, train_fraction=0.5)


def test_results_table_consensus_and_ranking(spec):
    r = build(spec, [outcome(spec, 0, 1.0), outcome(spec, 1, -1.0, far=("video", 1, 2)), outcome(spec, 2, 0.0)])
    assert r.method == "keypoints" and r.test.points.shape == (3, 4, 2)
    t = r.table()
    assert list(t.index) == ["member 0", "member 1", "member 2", "consensus"]
    assert list(t.columns) == ["mean px", "RMSE px", "status", "seed"]
    assert list(t["status"]) == ["done", "done", "done", "done"]
    assert list(t["seed"].iloc[:3]) == [10, 11, 12] and t["seed"].isna().iloc[3]
    assert t.loc["consensus", "mean px"] == pytest.approx(0.0, abs=1e-9)  # the median of -1, 0, +1 px
    assert t.loc["member 0", "mean px"] == pytest.approx(math.sqrt(2))
    top = r.label_next[0]
    assert (top["source"], top["frame"], top["rank"]) == ("video", 50, 1)
    # 120 px off is capped at the frame's diagonal (40 px for 32x24 frames); 1 of 3 members, 1 of 4 body parts
    assert top["score_px"] == pytest.approx(40 / 3 / 4, abs=0.5)
    assert top["score_px"] > 3 * r.label_next[1]["score_px"]
    assert {x["source"] for x in r.label_next} == {"test", "video"} and len(r.label_next) == 3 + 3


def test_files_under_dest(spec, tmp_path):
    r = build(spec, [outcome(spec, 0, 1.0), outcome(spec, 1, 0.5, missing=("test", 0, 1)),
                     outcome(spec, 2, status="failed")])
    files = write(r)
    assert sorted(files) == ["consensus.csv", "ensemble.json", "label_next.csv", "split.json"]
    dest = tmp_path / "ens"
    doc = json.loads((dest / "ensemble.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert doc["seeds"] == [10, 11, 12] and doc["split"]["test"] == list(spec.split.test)
    assert [m["status"] for m in doc["members"]] == ["done", "done", "failed"]
    assert doc["members"][2]["error"].startswith("KilledWorker") and doc["members"][2]["attempts"] == 3
    assert doc["members"][0]["url"].endswith("member-0")
    assert doc["consensus"]["members"] == 2 and doc["consensus"]["metrics"]["all"]["n"] > 0
    assert doc["spec"]["params"]["epochs"] == 1 and doc["spec"]["video_frames"] == 3
    rows = list(csv.DictReader((dest / "consensus.csv").open()))
    assert len(rows) == 3 + 3 and rows[0]["source"] == "test" and rows[-1]["source"] == "video"
    assert set(rows[0]) >= {"snout_x", "snout_y", "snout_score", "tailbase_score"}
    assert rows[0]["name"] == spec.labels.frames[spec.split.test[0]]
    ranked = list(csv.DictReader((dest / "label_next.csv").open()))
    assert ranked[0]["rank"] == "1" and (ranked[0]["source"], ranked[0]["frame"]) == ("test", str(spec.split.test[0]))
    assert (dest / "split.json").exists()
    t = r.table()
    assert t.loc["member 2", "status"] == "failed" and math.isnan(t.loc["member 2", "mean px"])


def test_no_member_finished(spec, tmp_path):
    r = build(spec, [outcome(spec, i, status="cancelled") for i in range(3)])
    assert r.test is None and r.label_next == []
    assert r.table().loc["consensus", "status"] == "unavailable"
    assert sorted(write(r)) == ["ensemble.json", "split.json"]
    assert json.loads((tmp_path / "ens" / "ensemble.json").read_text())["consensus"]["method"] == ""


def test_results_go_to_a_bucket(spec, tmp_path):
    """The home prefix on S3 (a real moto server), through PoseHub's own S3 filesystem as it travels to
    the workers (class and options)."""
    from s3server import MotoServer

    from posehub import storage
    from posehub.ensemble.spec import FsRef

    s3 = MotoServer(tmp_path).start()
    try:
        s3.client("s3").create_bucket(Bucket="posehub-home")
        fs = storage.PoseHubS3FileSystem(key="testing", secret="testing", endpoint_url=s3.url,
                                         read_only_buckets=["openfield-demo"])
        ref = FsRef.of(fs)
        assert ref.cls == "posehub.storage:PoseHubS3FileSystem"
        again = ref.open()
        assert type(again).__name__ == "PoseHubS3FileSystem" and again.read_only_buckets == {"openfield-demo"}
        spec.dest = "s3://posehub-home/alice/ensembles/e1"
        r = build(spec, [outcome(spec, 0, 1.0), outcome(spec, 1, -1.0), outcome(spec, 2)])
        files = write(r, again)
        assert files["ensemble.json"] == "s3://posehub-home/alice/ensembles/e1/ensemble.json"
        keys = sorted(o["Key"] for o in s3.client("s3").list_objects_v2(Bucket="posehub-home")["Contents"])
        assert keys == [f"alice/ensembles/e1/{n}" for n in ("consensus.csv", "ensemble.json", "label_next.csv",
                                                            "split.json")]
        with pytest.raises(PermissionError, match="read-only"):  # the guard travelled with it
            again.pipe_file("s3://openfield-demo/x.json", b"{}")
    finally:
        s3.stop()
