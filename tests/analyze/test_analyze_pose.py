"""Batch analysis in the pose image's environment (``analyze_steps.py``): the DeepLabCut and SLEAP files read
back by the tools' own readers; bad input refused before the cluster is touched; and a real run on a local
Dask cluster (2 worker processes) with a tiny SLEAP model: three clips cut from the open-field video, in
chunks of 24 frames, one worker killed mid-run, every clip equal to a one-pass prediction; a corrupt, an
empty and a truncated video among them fail on their own; a second analysis is cancelled.

The equality is exact (``np.array_equal``): a chunk's frames are decoded to the same pixels as in one pass
(one seek, then in order), each frame is predicted in the same batch (batches fall on multiples of the batch
size, chunks on whole batches), and the workers and this process use one torch thread each; with those
the CPU kernels give the same bits. Files read back are compared within what they store: PoseHub's CSV
keeps 3 decimals (5e-4 px), SLEAP's .slp float32 (1e-5).

About 100 s in all on 2 CPU cores, 85 s of it the Dask test: the tiny model trains in about 20 s, the analysis
takes about 25 s (each worker loads torch and the model once, about 9 s; the restarted worker again), the
reference about 15 s; the readers' test about 13 s (importing DeepLabCut), the others about a second. The
comparisons with the trainers' ``predict`` train a tiny model each: about 70 s for SLEAP, about 2 minutes for
DeepLabCut (ResNet-50 on four 640x480 frames, three times).
"""

from pathlib import Path

import pytest

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


def test_deeplabcut_and_sleap_read_the_files(run_step, openfield, tmp_path):
    got = run_step("writers", tmp_path, openfield)
    dlc = got["dlc"]
    assert dlc["files"] == ["m3v1mp4.analysis.json", "m3v1mp4.posehub.csv", "m3v1mp4DLC_posehub.csv",
                            "m3v1mp4DLC_posehub.h5"]
    # DeepLabCut's load_analyzed_data finds the .h5 by the video's name and the scorer, as for its own analyses
    assert dlc["path"] == str(tmp_path / "out-dlc" / "m3v1mp4DLC_posehub.h5") and dlc["scorer"] == "DLC_posehub"
    assert dlc["key"] == ["/df_with_missing"] and dlc["names"] == ["scorer", "bodyparts", "coords"]
    assert dlc["columns"] == [["DLC_posehub", bp, c] for bp in BODYPARTS for c in ("x", "y", "likelihood")]
    assert dlc["index"] == [0, 1, 2, 3, 4] and dlc["equal"]
    assert dlc["csv_equal"] and dlc["csv_columns_equal"]

    slp = got["sleap"]
    assert slp["files"] == ["m3v1mp4.analysis.json", "m3v1mp4.posehub.csv", "m3v1mp4.predictions.slp"]
    assert slp["video"] == str(openfield / "videos" / "m3v1mp4.mp4") and slp["frame_shape"] == [480, 640]
    assert slp["nodes"] == BODYPARTS
    assert slp["frames"] == [0, 1, 2, 4]  # nothing found on frame 3: no instance there
    assert slp["kinds"] == ["PredictedInstance"] * 4
    assert slp["points_equal"] and slp["scores_equal"]
    assert slp["instance_scores"] == slp["want_instance_scores"]


def test_bad_input_is_refused_before_anything_is_submitted(run_step, openfield, tmp_path):
    got = run_step("bad-input", tmp_path, openfield)
    assert got["corrupt"] == (f"video {tmp_path}/corrupt.mp4: not a readable video (OpenCV cannot open it: "
                              "corrupt, or not a video)")
    assert got["empty"] == f"video {tmp_path}/empty.mp4: an empty file (0 bytes)"
    assert got["text"].startswith(f"video {tmp_path}/notes.mp4: not a readable video")
    assert got["both"] == f"no video can be read: {got['corrupt']}; {got['empty']}"
    assert got["no_model"] == f"model folder {tmp_path}/nowhere does not exist"
    assert got["no_match"] == f"no videos match {tmp_path}/*.avi"


@pytest.mark.slow
def test_clips_on_a_dask_cluster_equal_one_pass(run_step, openfield, tmp_path):
    got = run_step("dask", tmp_path, openfield)
    plan = got["plan"]
    assert plan["clipA"]["chunks"] == [[0, 24], [24, 48], [48, 72], [72, 90]]
    assert plan["clipB"]["chunks"] == [[0, 24], [24, 48], [48, 72], [72, 75]]
    assert plan["clipC"]["chunks"] == [[0, 24], [24, 48], [48, 60]]
    assert plan["truncated"]["chunks"] == [[0, 24], [24, 48], [48, 60]]  # its header says 60 frames
    assert plan["corrupt"]["chunks"] == [] and "not a readable video" in plan["corrupt"]["error"]
    assert plan["empty"]["chunks"] == [] and "an empty file" in plan["empty"]["error"]

    # the killed worker's chunk ran again elsewhere, and every clip finished once, complete
    killed = got["killed"]
    videos = got["videos"]
    again = [c for c in videos[killed["video"]]["chunks"] if c["start"] == killed["start"]][0]
    assert again["attempts"] >= 2 and again["worker"] != killed["worker"]
    for name, frames in (("clipA", 90), ("clipB", 75), ("clipC", 60)):
        v = videos[name]
        assert v["status"] == "done" and v["error"] == "" and v["frames"] == v["ref_frames"] == frames
        assert v["equal"] and v["max_diff"] == 0.0, (name, v["max_diff"])  # the one-pass prediction, bit for bit
        assert v["ref_nan_share"] == 0.0  # the model found every body part, so the comparison compares numbers
        assert [[c["start"], c["stop"]] for c in v["chunks"]] == plan[name]["chunks"]
        f = v["files_equal"]
        assert f["csv_rows"] and f["csv"] and f["slp"] and f["slp_video"] == str(tmp_path / "clips" / f"{name}.mp4")
        assert f["record_chunks"] == plan[name]["chunks"] and f["record_frames"] == frames
        assert f["record_model_seed"] == 0 and len(f["record_sha256"]) == 64
        assert set(f["record_workers"]) == {c["worker"] for c in v["chunks"]}
        assert sorted(Path(p).name for p in v["files"].values()) == sorted(
            [f"{name}.posehub.csv", f"{name}.predictions.slp", f"{name}.analysis.json"])
        assert v["mean_confidence"] == pytest.approx(v["ref_mean_confidence"], abs=1e-12)
        assert v["low_confidence_share"] == pytest.approx(v["ref_low_share"], abs=1e-12)
    table = got["table"]
    assert [table[k]["status"] for k in sorted(table)] == ["done"] * 3 + ["failed"] * 3
    assert [p["status"] for p in got["progress"]] == ["done"] * 3 + ["failed"] * 3 == got["updates"]

    # a bad video among good ones: its own error, nothing written for it; the others finished
    assert videos["corrupt"]["error"] == plan["corrupt"]["error"] and videos["corrupt"]["files"] == {}
    assert videos["empty"]["error"] == plan["empty"]["error"] and videos["empty"]["files"] == {}
    t = videos["truncated"]
    assert t["status"] == "failed" and t["files"] == {}
    assert t["error"].startswith("frames 24..48: AnalyzeError: video ") and "frame 24 cannot be read" in t["error"]
    assert [c["attempts"] for c in t["chunks"] if c["start"] == 24] == [2]  # retries=1
    assert not list((tmp_path / "analysis").glob("truncated*")) and not list((tmp_path / "analysis").glob("corrupt*"))

    # cancelled: the running chunk stopped at its next batch, nothing more ran, nothing was written
    assert got["cancel_confirmed"] and got["cancel_done"] and got["free_after"]
    assert [p["status"] for p in got["cancel_progress"]] == ["cancelled", "cancelled"]
    moved = lambda progress: [(p["status"], p["chunks_done"], p["frames_done"]) for p in progress]  # noqa: E731
    assert moved(got["cancel_progress_later"]) == moved(got["cancel_progress"])
    assert 1 <= sum(p["chunks_done"] for p in got["cancel_progress"]) < 22  # of 12 + 10 chunks
    assert [r[1:] for r in got["cancel_results"]] == [["cancelled", {}], ["cancelled", {}]]
    assert got["cancel_files"] == []


def test_sleap_analysis_predicts_what_the_trainer_predicts(run_step, openfield, tmp_path):
    """sleap-nn fed frames in memory gives the points of the trainer's path through PNG files, for a grey
    video (sleap-io hands the network one channel) and a colour one (three channels); chunks equal one pass."""
    got = run_step("agree-sleap", tmp_path, openfield)
    assert got["grey"]["grey_frames"] and not got["colour"]["grey_frames"]
    for kind in ("grey", "colour"):
        g = got[kind]
        assert g["frames"] == 40 and g["nan_equal"] and g["chunks_equal"], (kind, g)
        assert g["nan_share"] < 1  # the comparison compares numbers
        assert g["max_diff"] <= 1e-3 and g["max_score_diff"] <= 1e-5, (kind, g)
    assert got["grey"]["ensemble_equal"]  # an ensemble's folder as the model: the members' consensus


@pytest.mark.slow
def test_dlc_analysis_predicts_what_the_trainer_predicts(run_step, openfield, tmp_path):
    """DeepLabCut's runner built once per thread gives the points of the trainer's runner built per call."""
    g = run_step("agree-dlc", tmp_path, openfield)["grey"]
    assert g["frames"] == 4 and g["nan_share"] == 0 and g["nan_equal"] and g["chunks_equal"], g
    assert g["max_diff"] <= 1e-3 and g["max_score_diff"] <= 1e-5, g
