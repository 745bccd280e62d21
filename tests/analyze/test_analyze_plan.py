"""What a batch analysis checks before it submits anything, its chunks and their join (pure; the hub's
environment: videos are "probed" by a stand-in, so no OpenCV is needed)."""

import json

import numpy as np
import pytest

from posehub.analyze import AnalyzeError, analyze, chunks, join
from posehub.analyze.plan import batches, make_plan, output_names

FRAMES = {"a.mp4": 100, "b.mp4": 37}


def probe(path):
    """A stand-in for OpenCV: the frame counts of FRAMES, an AnalyzeError for any other file."""
    name = path.rsplit("/", 1)[-1]
    if name not in FRAMES:
        raise AnalyzeError(f"video {path}: not a readable video (0 frames)")
    return FRAMES[name]


@pytest.fixture
def videos(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (d / name).write_bytes(b"not really a video")
    return d


class NoClient:
    """A Dask client that must not be used: analyze checks everything before it submits."""

    def __getattr__(self, name):
        raise AssertionError(f"client.{name} was used before the input was checked")


# ---------------------------------------------------------------- chunks, batches, join


def test_chunks_cover_the_video_in_order():
    assert chunks(100, 30) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert chunks(100, 100) == chunks(100, 500) == [(0, 100)]
    assert chunks(1, 1) == [(0, 1)] and chunks(0, 10) == []
    assert chunks(100, 30, align=16) == [(0, 32), (32, 64), (64, 96), (96, 100)]  # rounded up to whole batches
    for n, size, align in [(2330, 500, 16), (61, 7, 3), (5, 1, 1)]:
        c = chunks(n, size, align)
        assert c[0][0] == 0 and c[-1][1] == n and all(a[1] == b[0] for a, b in zip(c, c[1:]))
        assert all(start % align == 0 for start, _ in c)
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(AnalyzeError, match="chunk_frames must be a whole number >= 1"):
            chunks(100, bad)


def test_batches_fall_on_multiples_of_the_batch():
    assert batches(0, 20, 8) == [(0, 8), (8, 16), (16, 20)]
    assert batches(5, 20, 8) == [(5, 8), (8, 16), (16, 20)]
    assert batches(16, 17, 8) == [(16, 17)] and batches(3, 3, 8) == []
    # a frame is in the same batch whichever chunk reads it, when chunks start on batch edges
    one = batches(0, 100, 8)
    assert [b for start, stop in chunks(100, 24, 8) for b in batches(start, stop, 8)] == one


def _part(start, stop, k=2):
    pts = np.arange(start, stop, dtype=float)[:, None, None] * np.ones((1, k, 2))
    return {"start": start, "stop": stop, "points": pts, "scores": np.full((stop - start, k), start / 100)}


def test_join_puts_chunks_in_frame_order():
    got = join([_part(40, 50), _part(0, 20), _part(20, 40)], 50)
    assert got["points"].shape == (50, 2, 2) and got["scores"].shape == (50, 2)
    assert np.array_equal(got["points"][:, 0, 0], np.arange(50))
    assert got["scores"][45, 0] == 0.4


@pytest.mark.parametrize("parts, count, message", [
    ([(0, 20), (30, 50)], 50, r"v.mp4: frames 20..29 are missing"),
    ([(10, 50)], 50, r"v.mp4: frames 0..9 are missing"),
    ([(0, 30), (20, 50)], 50, r"v.mp4: the chunk 20..50 overlaps frames already joined \(up to 30\)"),
    ([(0, 20), (0, 20), (20, 50)], 50, r"overlaps"),
    ([(0, 20), (20, 40)], 50, r"v.mp4: the chunks end at frame 40, the video has 50 frames"),
    ([], 50, r"v.mp4: no chunks to join"),
])
def test_join_refuses_gaps_and_overlaps(parts, count, message):
    with pytest.raises(AnalyzeError, match=message):
        join([_part(a, b) for a, b in parts], count, "v.mp4")


def test_join_refuses_a_chunk_with_the_wrong_number_of_rows():
    bad = _part(20, 40)
    bad["points"] = bad["points"][:-1]
    with pytest.raises(AnalyzeError, match=r"the chunk 20..40 holds 19 point rows and 20 score rows, not 20"):
        join([_part(0, 20), bad])


# ---------------------------------------------------------------- the plan


def test_a_plan_of_two_videos(run_folder, videos):
    plan = make_plan(run_folder, str(videos / "*.mp4"), chunk_frames=30, batch=8, probe=probe, name="t1")
    assert plan.id == "t1" and plan.framework == "sleap" and plan.bodyparts == ["snout", "leftear", "rightear",
                                                                                "tailbase"]
    assert plan.model_dir == str(run_folder) and plan.model_record == {"framework": "sleap", "seed": 3}
    assert plan.params == {"chunk_frames": 30, "chunk_size": 32, "batch": 8, "retries": 2, "low_confidence": 0.5,
                           "device": "auto", "overwrite": False, "overlay": False}
    a, b = plan.videos
    assert (a.path, a.name, a.frames, a.dest) == (str(videos / "a.mp4"), "a", 100, str(videos))
    assert a.chunks == [(0, 32), (32, 64), (64, 96), (96, 100)] and b.chunks == [(0, 32), (32, 37)]
    assert a.files == {"csv": str(videos / "a.posehub.csv"), "slp": str(videos / "a.predictions.slp"),
                       "record": str(videos / "a.analysis.json")}
    # a folder means its videos; repeats are dropped; out= puts every file under it
    plan = make_plan(run_folder, [videos, str(videos / "b.mp4")], out="s3://lab/analyses/x", probe=probe,
                     out_fs=_memory())
    assert [v.name for v in plan.videos] == ["a", "b"]
    assert plan.videos[1].files["record"] == "s3://lab/analyses/x/b.analysis.json"


def _memory():
    import fsspec

    return fsspec.filesystem("memory")


def test_output_names_follow_the_tool():
    assert output_names("m3v1", "dlc") == {"csv": "m3v1.posehub.csv", "dlc_h5": "m3v1DLC_posehub.h5",
                                           "dlc_csv": "m3v1DLC_posehub.csv", "record": "m3v1.analysis.json"}
    assert output_names("m3v1", "sleap")["slp"] == "m3v1.predictions.slp"
    assert output_names("m3v1", "mytool") == {"csv": "m3v1.posehub.csv", "record": "m3v1.analysis.json"}


def test_a_bad_model_folder_is_refused_before_anything_is_submitted(tmp_path, videos):
    with pytest.raises(AnalyzeError, match=rf"model folder {tmp_path / 'nowhere'} does not exist"):
        analyze(tmp_path / "nowhere", videos, client=NoClient())
    (tmp_path / "notarun").mkdir()
    with pytest.raises(AnalyzeError, match=rf"{tmp_path / 'notarun'} is not a PoseHub run folder \(no model.json\)"):
        analyze(str(tmp_path / "notarun"), videos, client=NoClient())
    (tmp_path / "notarun" / "model.json").write_text("{")
    with pytest.raises(AnalyzeError, match=r"model.json: not a readable model.json"):
        analyze(str(tmp_path / "notarun"), videos, client=NoClient())
    with pytest.raises(AnalyzeError, match=r"not a URL"):
        analyze("s3://lab/models/run", videos, client=NoClient())


def test_videos_that_are_not_there_are_refused(run_folder, tmp_path, videos):
    with pytest.raises(AnalyzeError, match=rf"no videos match {tmp_path}/videos/\*.avi"):
        analyze(run_folder, str(videos / "*.avi"), client=NoClient())
    with pytest.raises(AnalyzeError, match=rf"video {videos}/c.mp4: no such file"):
        analyze(run_folder, [videos / "a.mp4", videos / "c.mp4"], client=NoClient())
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalyzeError, match=r"no videos in the folder .*empty"):
        analyze(run_folder, tmp_path / "empty", client=NoClient())
    with pytest.raises(AnalyzeError, match="no videos given"):
        analyze(run_folder, [], client=NoClient())


@pytest.mark.parametrize("kwargs, message", [
    ({"chunk_frames": 0}, "chunk_frames must be a whole number >= 1, got 0"),
    ({"chunk_frames": 10.5}, "chunk_frames must be a whole number >= 1"),
    ({"batch": 0}, "batch must be a whole number >= 1"),
    ({"retries": -1}, "retries must be a whole number >= 0"),
    ({"low_confidence": 1.5}, r"low_confidence must be a number in \[0, 1\]"),
    ({"device": ""}, "device must be 'auto'"),
    ({"out": ""}, "out must be a folder or bucket URL"),
    ({"resources": {"GPU": 0}}, "resources must be None or a dict"),
])
def test_bad_parameters_are_refused(run_folder, videos, kwargs, message):
    with pytest.raises(AnalyzeError, match=message):
        analyze(run_folder, videos, client=NoClient(), **kwargs)


def test_a_bad_name_is_refused(run_folder, videos):
    with pytest.raises(AnalyzeError, match="name must be letters"):
        make_plan(run_folder, videos, probe=probe, name="a/b")


def test_outputs_already_there_are_kept_unless_overwrite(run_folder, videos, tmp_path):
    (videos / "b.analysis.json").write_text("{}")
    with pytest.raises(AnalyzeError, match=rf"{videos}/b.analysis.json exists \(the analysis of {videos}/b.mp4\): "
                                           "pass overwrite=True"):
        make_plan(run_folder, videos, probe=probe)
    assert make_plan(run_folder, videos, probe=probe, overwrite=True).params["overwrite"] is True
    assert make_plan(run_folder, videos, probe=probe, out=tmp_path / "elsewhere").videos[1].dest == str(
        tmp_path / "elsewhere")
    fs = _memory()
    fs.pipe_file("memory://lab/out/a.posehub.csv", b"x")
    with pytest.raises(AnalyzeError, match=r"lab/out/a.posehub.csv exists"):
        make_plan(run_folder, videos, probe=probe, out="memory://lab/out", out_fs=fs)
    fs.rm("memory://lab/out/a.posehub.csv")


def test_two_videos_of_one_name_into_one_folder_are_refused(run_folder, videos, tmp_path):
    (tmp_path / "day2").mkdir()
    (tmp_path / "day2" / "a.mp4").write_bytes(b"x")
    with pytest.raises(AnalyzeError, match=r"day2/a.mp4 and .*videos/a.mp4 would both write .*out/a.posehub.csv"):
        make_plan(run_folder, [tmp_path / "day2" / "a.mp4", videos / "a.mp4"], out=tmp_path / "out", probe=probe)
    # beside each video they do not collide
    assert len(make_plan(run_folder, [tmp_path / "day2" / "a.mp4", videos / "a.mp4"], probe=probe).videos) == 2


def test_an_unreadable_video_among_readable_ones_is_reported_not_submitted(run_folder, videos):
    (videos / "broken.mp4").write_bytes(b"")
    plan = make_plan(run_folder, videos, probe=probe)
    assert [v.name for v in plan.videos] == ["a", "b", "broken"]
    assert [v.name for v in plan.runnable] == ["a", "b"]
    broken = plan.videos[2]
    assert broken.error == f"video {videos}/broken.mp4: not a readable video (0 frames)" and broken.chunks == []
    # ... but when none can be read, nothing starts
    with pytest.raises(AnalyzeError, match=r"^video .*broken.mp4: not a readable video \(0 frames\)$"):
        make_plan(run_folder, videos / "broken.mp4", probe=probe)
    (videos / "broken2.mp4").write_bytes(b"")
    with pytest.raises(AnalyzeError, match=r"^no video can be read: video .*broken.mp4: .*; video .*broken2.mp4"):
        make_plan(run_folder, [videos / "broken.mp4", videos / "broken2.mp4"], probe=probe)


def test_the_model_json_of_a_trained_run_is_what_is_read(tmp_path, videos):
    d = tmp_path / "dlcrun"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"framework": "dlc", "bodyparts": ["a", "b"], "info": {"snapshot": "x"}}))
    plan = make_plan(d, videos / "a.mp4", probe=probe, out=tmp_path / "o")
    assert plan.framework == "dlc" and plan.model_record == {}
    assert sorted(plan.videos[0].files) == ["csv", "dlc_csv", "dlc_h5", "record"]
