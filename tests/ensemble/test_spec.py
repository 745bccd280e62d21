"""Checks before an ensemble starts, the worker resources it asks for, the cost estimate. No Dask here."""


import pytest

from posehub.ensemble import EnsembleError, estimate, member_resources, train_ensemble
from posehub.ensemble.spec import FsRef, validate


class RecordingClient:
    """Stands for a distributed.Client: records anything asked of it."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        self.calls.append(name)
        raise AssertionError(f"the client was used ({name}) before the input was checked")


def workers(*resources):
    return {"workers": {f"tcp://10.0.0.{i}:1": {"resources": r} for i, r in enumerate(resources)}}


def test_member_resources_follow_what_the_workers_advertise():
    assert member_resources(workers({"GPU": 1}, {"GPU": 1})) == {"GPU": 1}
    assert member_resources(workers({"GPU": 4})) == {"GPU": 1}
    assert member_resources(workers({"member": 1}, {})) == {"member": 1}
    assert member_resources(workers({"member": 1}, {"GPU": 1})) == {"GPU": 1}
    assert member_resources(workers({}, {})) == {}  # a plain LocalCluster
    assert member_resources(workers({"GPU": 0})) == {}
    assert member_resources({"workers": {}}) == {}
    assert member_resources({}) == {}


@pytest.fixture
def bad_labels(tmp_path):
    p = tmp_path / "CollectedData_x.csv"
    p.write_text("this,is\nnot,labels\n")
    return p


CASES = [
    # (what, kwargs changed, message)
    ("missing labels file", {"labels": "MISSING"}, r"labels: .*no such labels file"),
    ("not a labels file", {"labels": "BAD"}, r"labels: .*not a DeepLabCut labels file"),
    ("labels of the wrong type", {"labels": 42}, r"labels must be a posehub Labels or the path/URL"),
    ("unknown framework", {"framework": "openpose"}, r"unknown framework 'openpose'; available: dlc, .*sleap"),
    ("no members", {"members": 0}, r"members must be a whole number >= 1, got 0"),
    ("members not a whole number", {"members": 2.5}, r"members must be a whole number >= 1, got 2.5"),
    ("members a bool", {"members": True}, r"members must be a whole number >= 1, got True"),
    ("members a string", {"members": "3"}, r"members must be a whole number >= 1, got '3'"),
    ("too few seeds", {"seeds": [1, 2]}, r"2 seed\(s\) for 3 member\(s\): give one seed per member"),
    ("too many seeds", {"seeds": [1, 2, 3, 4]}, r"4 seed\(s\) for 3 member\(s\)"),
    ("a seed twice", {"seeds": [7, 1, 7]}, r"seed 7 is given twice: each member needs its own seed"),
    ("a seed not a number", {"seeds": [1, "2", 3]}, r"seeds must be whole numbers, got '2'"),
    ("seeds not a list", {"seeds": 5}, r"seeds must be a list of 3 whole numbers"),
    ("unknown parameter", {"config": {"epoch": 3}}, r"sleap: unknown parameter\(s\) epoch; known: augment, "),
    ("bad parameter value", {"config": {"scale": 2}}, r"sleap: scale must be in \(0, 1\], got 2"),
    ("negative epochs", {"config": {"epochs": -1}}, r"sleap: epochs must be > 0, got -1"),
    ("parameter of the wrong type", {"config": {"epochs": "ten"}}, r"sleap: epochs must be a number, got 'ten'"),
    ("config not a dict", {"config": [("epochs", 3)]}, r"config must be a dict of sleap parameters"),
    ("dlc parameter for sleap", {"config": {"crop": 256}}, r"sleap: unknown parameter\(s\) crop"),
    ("negative retries", {"retries": -1}, r"retries must be a whole number >= 0, got -1"),
    ("bad train fraction", {"train_fraction": 1.5}, r"train_fraction must be between 0 and 1"),
    ("missing video", {"video": "MISSING_VIDEO"}, r"video .*nowhere.mp4: no such file"),
    ("bad video frames", {"video": "VIDEO", "video_frames": -2}, r"video_frames must be >= 0, got -2"),
    ("repeated video frames", {"video": "VIDEO", "video_frames": [3, 3]}, r"video_frames must be distinct"),
    ("bad resources", {"resources": {"GPU": 0}}, r"resources must be 'auto', None or a dict like"),
    ("a name with a slash", {"name": "a/b"}, r"name must be a non-empty string without '/'"),
]


@pytest.mark.parametrize("what,change,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_at_once_and_starts_nothing(what, change, message, tiny_project, bad_labels, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not checked here")
    subst = {"MISSING": str(tmp_path / "nope" / "CollectedData_x.csv"), "BAD": str(bad_labels),
             "MISSING_VIDEO": str(tmp_path / "nowhere.mp4"), "VIDEO": str(video)}
    kwargs = {"labels": str(tiny_project), "framework": "sleap", "members": 3, "dest": str(tmp_path / "out")}
    kwargs.update({k: subst.get(v, v) if isinstance(v, str) else v for k, v in change.items()})
    client = RecordingClient()
    with pytest.raises(EnsembleError, match=message):
        train_ensemble(client=client, **kwargs)
    assert client.calls == []
    assert not (tmp_path / "out").exists()


def test_no_dest_and_no_home_prefix(tiny_project, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHUB_STORAGE", str(tmp_path / "no-manifest.json"))
    client = RecordingClient()
    with pytest.raises(EnsembleError, match=r"no dest given and the home prefix is not available .*pass dest="):
        train_ensemble(str(tiny_project), "sleap", 2, client=client)
    assert client.calls == []


def test_a_frame_that_cannot_be_read(tiny_project, tmp_path):
    (tiny_project.parent / "img000.png").unlink()
    with pytest.raises(EnsembleError, match=r"labels: .*frame 'labeled-data/v1/img000.png' not found"):
        train_ensemble(str(tiny_project), "sleap", 2, dest=str(tmp_path / "out"), client=RecordingClient())


def test_a_good_spec(tiny_project, tmp_path):
    spec = validate(str(tiny_project), "SLEAP-nn", 3, {"epochs": 1}, [5, 6, 7], dest=str(tmp_path / "e"),
                    split_seed=3, video=None)
    assert spec.framework == "sleap" and spec.members == 3 and spec.seeds == [5, 6, 7]
    assert spec.params["epochs"] == 1 and spec.params["scale"] == 0.5  # defaults filled in
    assert spec.split.seed == 3 and len(spec.split.test) + len(spec.split.train) == 6
    assert spec.image_shape == (24, 32)
    assert spec.id.startswith("sleap-") and spec.member_dest(2) == str(tmp_path / "e" / "member-2")
    assert validate(str(tiny_project), "sleap", 4, dest=str(tmp_path)).seeds == [0, 1, 2, 3]
    d = spec.describe()
    assert d["seeds"] == [5, 6, 7] and d["split_seed"] == 3 and d["labels"]["frames"] == 6


def test_filesystems_travel_as_class_and_options():
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem

    ref = FsRef.of(LocalFileSystem())
    assert ref.cls == "fsspec.implementations.local:LocalFileSystem"
    assert isinstance(ref.open(), LocalFileSystem)
    assert isinstance(FsRef.of(MemoryFileSystem()).open(), MemoryFileSystem)
    assert FsRef.of(None) is None


def test_estimate_is_a_rough_model_of_worker_hours_and_cost():
    one = estimate("sleap", 1, {"epochs": 100}, n_train_frames=93, price_per_hour=2.0)
    five = estimate("sleap", 5, {"epochs": 100}, n_train_frames=93, price_per_hour=2.0)
    assert five.worker_hours == pytest.approx(5 * one.worker_hours)
    assert five.cost == pytest.approx(five.worker_hours * 2.0)
    assert five.wall_hours == pytest.approx(one.wall_hours)  # all at once
    assert estimate("sleap", 5, {"epochs": 100}, workers=2).wall_hours == pytest.approx(3 * one.wall_hours)
    assert estimate("sleap", 1, {"epochs": 200}).worker_hours > one.worker_hours
    assert estimate("sleap", 1, {"epochs": 100}, gpu=False).worker_hours > 10 * (one.worker_hours - 240 / 3600)
    assert estimate("dlc", 1, {"epochs": 100, "crop": 448}).frame_epochs == 100 * 93
    assert str(five).startswith("Estimate: about ") and "$" in str(five) and "rough" in str(five)
    assert estimate("sleap", 2, seconds_per_frame_epoch=1.0, overhead_s=0, n_train_frames=10,
                    params={"epochs": 3, "validation_fraction": 0.5, "scale": 1.0}).seconds_per_member == 15
    with pytest.raises(EnsembleError, match="unknown framework"):
        estimate("openpose", 2)
    with pytest.raises(EnsembleError, match=r"unknown parameter\(s\) epoch"):
        estimate("sleap", 2, {"epoch": 3})
    with pytest.raises(EnsembleError, match="members must be"):
        estimate("dlc", 0)
