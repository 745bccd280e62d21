"""The label-next loop: an ensemble's frames to label next become a SLEAP or DeepLabCut project, a labeller
labels some of them, PoseHub reads them back, merges them with the labels the ensemble had and trains.

The ensemble is real and tiny: two SLEAP members (1 epoch on 20 open-field frames at scale 0.25) trained
and run by ``posehub.ensemble.member`` as on a Dask worker (without Dask), predicting 6 frames of the
open-field video; their consensus and ranking are ``posehub.ensemble.results``' own. So the consensus
placed in the projects is a barely trained model's: the tests check it arrives unchanged, not that it is
good. The labeller is sleap-io (as sleap-label saves), SLEAP's own GUI driven offscreen through its
commands, and napari-deeplabcut's own reader and writer (as its save does after promoting machine labels).
Both trainings run (SLEAP and DeepLabCut, 1 epoch on CPU). The steps run in the pose image's environment
(``label_next_steps.py``); bad input and merging are checked here, in the hub's.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from poseenv import POSE_PY, REPO
from posehub.ensemble.results import build, write
from posehub.ensemble.spec import validate
from posehub.pose import labelling
from posehub.pose import labels as L
from posehub.pose import record
from posehub.pose.split import split

HERE = Path(__file__).resolve().parent
CSV = "labeled-data/m4s1/CollectedData_Pranav.csv"
TOP = 5


def step(mode: str, tmp_path: Path, openfield: Path, ens: Path | None = None) -> dict:
    if not POSE_PY.exists():
        pytest.fail(f"the pose image's environment is not built ({POSE_PY}): `make test` builds it")
    env = dict(os.environ, PYTHONPATH=str(REPO / "extensions"), OMP_NUM_THREADS="2")
    args = [str(POSE_PY), str(HERE / "label_next_steps.py"), mode, str(tmp_path), str(openfield)]
    r = subprocess.run(args + ([str(ens)] if ens else []), capture_output=True, text=True, timeout=600,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-6000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, openfield) -> dict:
    out = tmp_path_factory.mktemp("ensemble")
    got = step("ensemble", out, openfield)
    got["dest"] = Path(got["dest"])
    return got


def ranked_video_frames(dest: Path) -> list[int]:
    import csv

    with open(dest / "label_next.csv") as f:
        return [int(r["frame"]) for r in csv.DictReader(f) if r["source"] == "video"]


# ---------------------------------------------------------------- the loop, in the pose environment


def test_sleap_round_trip(ensemble, openfield, tmp_path):
    """The .slp of the top 5 frames (the ensemble is SLEAP's: label_next_project picks SLEAP and the ensemble's
    folder); 3 labelled with sleap-io and saved as sleap-label saves; read back; merged; trained on."""
    got = step("sleap", tmp_path, openfield, ensemble["dest"])
    dest = ensemble["dest"]
    assert got["path"] == str(dest / "label-next" / "label_next.slp")
    assert got["files"] == ["label_next.slp", "label_next.video.h5"]
    assert got["suggestions"] == ranked_video_frames(dest)[:TOP]  # the most disagreement first
    assert got["nodes"] == ["snout", "leftear", "rightear", "tailbase"]
    assert got["instances"] == [["PredictedInstance"]] * TOP
    assert all(got["predicted_equal"]) and all(got["scores_equal"])  # the consensus, as consensus.csv has it
    assert got["embedded"] and all(got["images_equal"]) and len(got["images_equal"]) == TOP
    assert all(got["alone_images_equal"]) and len(got["alone_images_equal"]) == TOP  # the .slp opens on its own

    loaded = got["loaded"]
    assert loaded["frames"] == loaded["names"] and len(loaded["frames"]) == 3  # only the frames labelled
    assert loaded["points_equal"] and all(loaded["images_equal"]) and len(loaded["images_equal"]) == 3

    train = got["train"]
    assert train["merged_root"] == "" and train["merged_frames_absolute"]
    assert train["frames"] == 23
    assert train["sets"] == [train["old"], train["new"]]  # sources, frame counts and fingerprints of both sets
    assert [s["frames"] for s in train["sets"]] == [20, 3]
    assert train["sets"][1]["source"] == got["path"] and train["sets"][0]["source"].endswith(CSV)
    assert train["inputs"] == sorted(s["source"] for s in train["sets"])

    # written again over it only when asked, with load_labels' copies of the frames gone
    assert got["frames_dir_before"]
    assert got["overwritten"] == {"frames_dir": False, "suggestions": 2, "user": 0}


def test_labelled_in_sleap_label(ensemble, openfield, tmp_path):
    """SLEAP's own GUI opens the project; a user instance placed on 3 suggested frames through its commands and
    saved with its Save comes back through load_labels."""
    got = step("sleap-gui", tmp_path, openfield, ensemble["dest"])
    assert got["suggestions"] == TOP
    assert got["frames"] == ranked_video_frames(ensemble["dest"])[:3]
    assert got["loaded"]["frames"] == [f"video0_frame{f:06d}.png" for f in got["frames"]]
    assert got["loaded"]["points_equal"]


def test_dlc_round_trip(ensemble, openfield, tmp_path):
    """The DeepLabCut project of the top 5 frames; opened with napari-deeplabcut's reader (the machine labels
    are the consensus), 3 frames labelled and saved with its writer; read back (the CSV, then the .h5 alone);
    merged; trained on with DeepLabCut."""
    got = step("dlc", tmp_path, openfield, ensemble["dest"])
    cfg = got["config"]
    assert cfg["Task"] == "label-next" and cfg["scorer"] == "Pranav"  # the scorer of the labels the ensemble had
    assert cfg["project_path"] == str(tmp_path / "label-next") and cfg["engine"] == "pytorch"
    assert cfg["bodyparts"] == ["snout", "leftear", "rightear", "tailbase"] and cfg["multianimalproject"] is False
    assert cfg["video_sets"] == {ensemble["video"]: {"crop": "0, 640, 0, 480"}} and cfg["numframes2pick"] == TOP
    top = ranked_video_frames(ensemble["dest"])[:TOP]
    assert got["folder"] == Path(ensemble["video"]).stem
    assert got["files"] == sorted([f"img{f:04d}.png" for f in top] + ["machinelabels-iter0.h5"])
    assert all(got["images_equal"]) and len(got["images_equal"]) == TOP
    assert got["machine_equal"] and got["machine_scorer"] == "posehub_consensus"
    assert got["machine_paths"] == sorted(f"labeled-data/{got['folder']}/img{f:04d}.png" for f in top)

    assert got["written"] == ["CollectedData_Pranav.csv", "CollectedData_Pranav.h5"]  # napari-deeplabcut writes both
    loaded = got["loaded"]
    assert loaded["frames"] == loaded["want"] and loaded["root"] == str(tmp_path / "label-next")
    assert loaded["source"] == "CollectedData_Pranav.csv" and loaded["scorer"] == "Pranav"
    assert loaded["points_equal"] and all(loaded["images_equal"]) and len(loaded["images_equal"]) == 3
    assert got["h5_alone"] == {"source": "CollectedData_Pranav.h5", "same": True}

    train = got["train"]
    assert train["frames"] == 13 and train["sets"] == [train["old"], train["new"]]
    assert [s["frames"] for s in train["sets"]] == [10, 3]
    assert train["sets"][1]["source"].endswith("CollectedData_Pranav.h5")


def test_widget_writes_the_project_and_opens_the_desktop(openfield, tmp_path):
    """After an ensemble finished: "Label next frames" writes the project for its tool (DeepLabCut here) in its
    folder, or in ~/label-next/<id>/ for an ensemble in a bucket; "Open in Desktop" says what the desktop
    said (here: that none is running)."""
    got = step("widget", tmp_path, openfield)
    assert got["hidden_before"] == "none" and got["shown_after"] != "none" and got["open_disabled"]
    project = tmp_path / "ens" / "label-next"
    assert got["project"] == str(project)
    assert "3 frame(s) to label next" in got["written"] and "DeepLabCut project" in got["written"]
    assert str(project) in got["written"]
    assert got["project_files"] == ["config.yaml", "labeled-data/m3v1mp4/img0500.png",
                                    "labeled-data/m3v1mp4/img1000.png", "labeled-data/m3v1mp4/img2000.png",
                                    "labeled-data/m3v1mp4/machinelabels-iter0.h5"]
    assert got["open_enabled"]
    assert "Already written" in got["again"] and "delete it to write it again" in got["again"]
    assert "Your desktop is not running" in got["desktop"] and "#b00" in got["desktop"]
    assert got["bucket_project"] == str(tmp_path / "home" / "label-next" / "widget-test")
    assert "in a bucket, so the project is in your home" in got["bucket"]


# ---------------------------------------------------------------- bad input: a clear error, nothing written


def made_up_ensemble(openfield, tmp_path, video: str | None, status: str = "done"):
    """An ensemble's results written by posehub.ensemble.results from made-up member outcomes (the labels
    plus noise; 3 video frames when ``video``)."""
    labels = L.load(str(openfield / CSV)).subset(range(0, 116, 12))
    spec = validate(labels, "sleap", 2, {"epochs": 1}, [0, 1], dest=str(tmp_path / "ens"), video=video,
                    video_frames=[1, 2, 3] if video else None)
    outcomes = []
    for m in range(2):
        test = labels.points[list(spec.split.test)] + m
        pred = {"test_frames": np.array(spec.split.test), "test_points": test,
                "test_scores": np.full(test.shape[:-1], 0.9), "stride": np.array(1.0)}
        if video:
            pred.update(video_frames=np.array([1, 2, 3]), video_points=np.full((3, 4, 2), 100.0 + m),
                        video_scores=np.full((3, 4), 0.8))
        outcomes.append({"status": status, "seed": m, "predictions": pred})
    write(build(spec, outcomes))
    return tmp_path / "ens"


def nothing_written(path: Path) -> bool:
    return not path.exists() and not path.parent.exists()


@pytest.mark.parametrize("writer", ["sleap", "dlc"])
def test_not_an_ensemble_folder(tmp_path, writer):
    out = tmp_path / "out" / ("p.slp" if writer == "sleap" else "p")
    with pytest.raises(L.LabelsError, match=r"not an ensemble's results \(no ensemble.json\): give the folder an "
                                            r"ensemble wrote its results to"):
        labelling.label_next_project(str(tmp_path), writer, out)
    assert nothing_written(out)


def test_no_video_frames(openfield, tmp_path):
    ens = made_up_ensemble(openfield, tmp_path, video=None)
    out = tmp_path / "out" / "label_next.slp"
    with pytest.raises(L.LabelsError) as e:
        labelling.sleap_project(str(ens), out)
    assert str(e.value) == (f"{ens}: this ensemble sampled no video frames: give video= when training it to get "
                            "frames to label next")
    assert nothing_written(out)
    with pytest.raises(L.LabelsError, match="sampled no video frames"):
        labelling.dlc_project(str(ens), tmp_path / "out" / "proj")
    assert nothing_written(tmp_path / "out" / "proj")


def test_no_member_finished(openfield, tmp_path):
    ens = made_up_ensemble(openfield, tmp_path, video=None, status="cancelled")
    with pytest.raises(L.LabelsError, match=r"no member of ensemble .* finished: there is no consensus"):
        labelling.label_next_project(str(ens), out=tmp_path / "out" / "x.slp")
    assert nothing_written(tmp_path / "out" / "x.slp")


def test_missing_video(openfield, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    ens = made_up_ensemble(openfield, tmp_path, video=str(video))
    video.unlink()
    for writer, out in ((labelling.sleap_project, tmp_path / "out" / "p.slp"),
                        (labelling.dlc_project, tmp_path / "out" / "p")):
        with pytest.raises(L.LabelsError) as e:
            writer(str(ens), out)
        assert str(e.value).startswith(f"{video}: the ensemble's video is missing (moved or deleted?)")
        assert nothing_written(out)


@pytest.mark.parametrize("top", [0, -3, 2.5, True, "5"])
def test_top_must_be_a_whole_number(openfield, tmp_path, top):
    with pytest.raises(L.LabelsError, match=r"top must be a whole number >= 1 \(how many frames to label\), got"):
        labelling.sleap_project(str(tmp_path), tmp_path / "out" / "p.slp", top=top)
    assert nothing_written(tmp_path / "out" / "p.slp")


def test_an_existing_project_is_not_replaced(openfield, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    ens = made_up_ensemble(openfield, tmp_path, video=str(video))
    slp = tmp_path / "out" / "label_next.slp"
    slp.parent.mkdir()
    slp.write_bytes(b"my labels")
    with pytest.raises(L.LabelsError, match=r"label_next.slp already exists: pass overwrite=True to replace it"):
        labelling.sleap_project(str(ens), slp)
    (tmp_path / "out" / "label_next.slp").unlink()
    (tmp_path / "out" / "label_next.frames").mkdir()  # what load_labels made of an earlier project
    with pytest.raises(L.LabelsError, match=r"label_next.frames already exists"):
        labelling.sleap_project(str(ens), slp)
    proj = tmp_path / "proj"
    (proj / "labeled-data").mkdir(parents=True)
    with pytest.raises(L.LabelsError, match=r"proj already exists: pass overwrite=True"):
        labelling.dlc_project(str(ens), proj)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["label_next.frames"]
    assert [p.name for p in proj.iterdir()] == ["labeled-data"]


def test_not_a_slp_name_and_an_unknown_tool(openfield, tmp_path):
    with pytest.raises(L.LabelsError, match=r"a SLEAP project is a .slp file"):
        labelling.sleap_project(str(tmp_path), tmp_path / "p.txt")
    with pytest.raises(L.LabelsError, match=r"tool must be one of sleap, dlc \(DeepLabCut\), got 'openpose'"):
        labelling.tool_of("openpose")


def test_results_read_from_files_and_from_the_result_agree(openfield, tmp_path):
    """What the projects are made of, without writing one: the ranked video frames and their consensus, from
    the files or the EnsembleResult; the top N; where a project goes by default."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    labels = L.load(str(openfield / CSV)).subset(range(0, 116, 12))
    labels.skeleton = [("snout", "tailbase")]
    spec = validate(labels, "dlc", 2, {"epochs": 1, "weights": "scratch"}, [0, 1], dest=str(tmp_path / "ens"),
                    video=str(video), video_frames=[4, 8, 15])
    outcomes = [{"status": "done", "seed": m, "predictions": {
        "test_frames": np.array(spec.split.test), "test_points": labels.points[list(spec.split.test)],
        "test_scores": np.full((len(spec.split.test), 4), 0.9), "stride": np.array(1.0),
        "video_frames": np.array([4, 8, 15]),
        "video_points": np.array([[[100.0, 100.0]] * 4, [[200.0, 50.0 + 40 * m]] * 4, [[10.0 + 5 * m, 10.0]] * 4]),
        "video_scores": np.full((3, 4), 0.5 + 0.25 * m)}} for m in range(2)]
    result = build(spec, outcomes)
    write(result)
    a = labelling.read(result, top=2)
    b = labelling.read(str(tmp_path / "ens"), top=2)
    assert a.frames == b.frames == [8, 15]  # 40 px apart, then 5 px; frame 4 agreed
    assert np.allclose(a.points, b.points, atol=1e-3) and np.allclose(a.scores, b.scores, atol=1e-4)
    assert a.video == b.video == str(video) and a.framework == b.framework == "dlc"
    assert a.skeleton == b.skeleton == [("snout", "tailbase")] and a.scorer == b.scorer == "Pranav"
    assert a.disagreement[0] > a.disagreement[1] > 0
    assert len(labelling.read(result, top=20).frames) == 3
    assert labelling.default_out(a, "sleap") == tmp_path / "ens" / "label-next" / "label_next.slp"
    assert labelling.default_out(a, "dlc") == tmp_path / "ens" / "label-next"
    a.dest = "s3://posehub-home/alice/ensembles/e1"
    assert labelling.default_out(a, "deeplabcut") == Path.home() / "label-next" / a.ensemble
    assert labelling.dlc_frame_names([4, 1863], 2330) == ["img0004.png", "img1863.png"]
    assert labelling.dlc_frame_names([7], 100) == ["img07.png"]  # DeepLabCut's width: the frame count's digits


# ---------------------------------------------------------------- merging label sets; the run record


def copy_of(labels: L.Labels, idx, folder: Path) -> L.Labels:
    """Frames of ``labels`` as a DeepLabCut project of their own in ``folder``."""
    part = labels.subset(idx)
    target = folder / "labeled-data" / "v2"
    target.mkdir(parents=True)
    names = []
    for i in range(len(part)):
        name = f"labeled-data/v2/img{i:03d}.png"
        (folder / name).write_bytes(Path(part.frame_path(i)).read_bytes())
        names.append(name)
    csv_path = target / "CollectedData_me.csv"
    csv_path.write_text(L.Labels(part.bodyparts, names, part.points, scorer="me").to_dlc_csv())
    return L.load(str(folder))


def test_merge_keeps_the_sets_for_the_record(openfield, tmp_path):
    old = L.load(str(openfield / CSV)).subset(range(0, 60))
    new = copy_of(L.load(str(openfield / CSV)), range(100, 104), tmp_path / "new")
    both = L.merge(old, new)
    assert len(both) == 64 and both.root == "" and all(os.path.isabs(f) for f in both.frames)
    assert both.frames[0] == str(openfield / "labeled-data/m4s1/img0000.png")
    assert np.array_equal(both.read_image(62), new.read_image(2))
    assert both.label_sets() == [{"source": old.source, "frames": 60, "sha256": old.fingerprint()},
                                 {"source": new.source, "frames": 4, "sha256": new.fingerprint()}]
    assert old.label_sets() == [{"source": old.source, "frames": 60, "sha256": old.fingerprint()}]
    # a subset (the training frames of a split) counts what it keeps of each set
    part = both.subset(range(58, 63))
    assert [(s["source"], s["frames"]) for s in part.label_sets()] == [(old.source, 2), (new.source, 3)]
    assert part.label_sets()[1]["sha256"] == new.subset(range(3)).fingerprint()
    # merged again with a third set
    third = copy_of(L.load(str(openfield / CSV)), [110], tmp_path / "third")
    three = L.merge(both, third)
    assert [s["frames"] for s in three.label_sets()] == [60, 4, 1] and len(three) == 65

    rec = record.make_record(framework="sleap", params={}, seed=0, split=split(both, 0.8, 0), labels=both,
                             inputs={}, weights="scratch")
    assert rec["labels"]["sets"] == both.label_sets() and rec["labels"]["frames"] == 64
    assert rec["labels"]["source"] == f"{old.source} + {new.source}"
    plain = record.make_record(framework="sleap", params={}, seed=0, split=split(old, 0.8, 0), labels=old,
                               inputs={}, weights="scratch")
    assert plain["labels"]["sets"] == [{"source": old.source, "frames": 60, "sha256": old.fingerprint()}]


def test_merge_reorders_body_parts_and_refuses_what_does_not_fit(openfield, tmp_path):
    old = L.load(str(openfield / CSV)).subset(range(0, 10))
    swapped = L.Labels(old.bodyparts[::-1], [str(openfield / f) for f in old.frames[:2]], old.points[:2, ::-1],
                       source="swapped.csv")
    with pytest.raises(L.LabelsError, match=r"img0000.png is in .*CollectedData_Pranav.csv and in swapped.csv: each "
                                            r"frame may be merged once"):
        L.merge(old, swapped)  # the same images
    other = copy_of(L.load(str(openfield / CSV)), range(20, 22), tmp_path / "p")
    reordered = L.Labels(other.bodyparts[::-1], other.frames, other.points[:, ::-1], other.root, source="r.csv")
    merged = L.merge(old, reordered)
    assert merged.bodyparts == old.bodyparts and np.allclose(merged.points[10:], other.points)

    fewer = L.Labels(["snout", "tailbase"], ["a.png"], np.ones((1, 2, 2)), root=str(tmp_path), source="two.csv")
    with pytest.raises(L.LabelsError) as e:
        L.merge(old, fewer)
    assert str(e.value) == (f"cannot merge two.csv (body parts snout, tailbase) with {old.source} (body parts snout, "
                            "leftear, rightear, tailbase): every set needs the same body parts")
    with pytest.raises(L.LabelsError, match="merge: no labels given"):
        L.merge()
    with pytest.raises(L.LabelsError, match="merge takes posehub Labels"):
        L.merge(old, str(openfield / CSV))


def test_merge_sets_on_different_filesystems(openfield, tmp_path):
    """A set in a bucket (fsspec's in-memory filesystem stands in for it) and one on the local disk: each frame
    is read through its own set's filesystem."""
    import fsspec

    mem = fsspec.filesystem("memory")
    lab = L.load(str(openfield / CSV))
    for i in range(3):
        mem.pipe_file(f"memory://lab/proj/{lab.frames[i]}", Path(lab.frame_path(i)).read_bytes())
    mem.pipe_file(f"memory://lab/proj/{CSV}", L.Labels(lab.bodyparts, lab.frames[:3], lab.points[:3],
                                                        scorer="Pranav").to_dlc_csv().encode())
    bucket = L.load(f"memory://lab/proj/{CSV}", fs=mem)
    local = copy_of(lab, range(50, 52), tmp_path / "local")
    both = L.merge(bucket, local)
    assert isinstance(both.fs, L.Filesystems)
    assert both.frames[0] == f"memory://lab/proj/{lab.frames[0]}" and both.frames[3].startswith(str(tmp_path))
    assert np.array_equal(both.read_image(0), lab.read_image(0))
    assert np.array_equal(both.read_image(4), lab.read_image(51))
    assert [s["source"] for s in both.label_sets()] == [f"memory://lab/proj/{CSV}", local.source]
    mem.rm("memory://lab", recursive=True)


def test_collected_data_csv_or_h5(openfield, tmp_path):
    """DeepLabCut's tools write both files of a scorer in one save: the CSV is read (no PyTables needed); an
    .h5 saved alone later is read instead; frames nobody labelled (empty rows) are left out."""
    lab = L.load(str(openfield / CSV)).subset(range(4))
    folder = tmp_path / "labeled-data" / "m4s1"
    folder.mkdir(parents=True)
    points = lab.points.copy()
    points[1] = np.nan  # napari-deeplabcut writes a row for every image of the folder
    (folder / "CollectedData_Pranav.csv").write_text(L.Labels(lab.bodyparts, lab.frames, points,
                                                              scorer="Pranav").to_dlc_csv())
    h5 = folder / "CollectedData_Pranav.h5"
    h5.write_bytes(b"written in the same save")
    got = L.load(str(tmp_path))
    assert got.source == str(folder / "CollectedData_Pranav.csv")
    assert got.frames == [lab.frames[i] for i in (0, 2, 3)] and np.allclose(got.points, lab.points[[0, 2, 3]])
    later = os.stat(folder / "CollectedData_Pranav.csv").st_mtime + 60
    os.utime(h5, (later, later))
    assert L._find_label_files(str(tmp_path)) == [str(h5)]
