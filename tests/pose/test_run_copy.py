"""A finished run is copied to the user's home prefix: a local folder, or S3 (a real moto server)."""

import json

import s3fs
from fsspec.implementations.local import LocalFileSystem

from posehub.pose.run import copy_run, run_files


def make_run(tmp_path):
    src = tmp_path / "run"
    (src / "model").mkdir(parents=True)
    (src / "model" / "best.ckpt").write_bytes(b"weights")
    (src / "run.json").write_text(json.dumps({"seed": 1}))
    (src / "frames").mkdir()
    (src / "frames" / "00000_img.png").write_bytes(b"a copy of a frame, not worth keeping")
    (src / "train.pkg.slp").write_bytes(b"SLEAP's training labels with every frame embedded")
    return src


def test_what_a_run_copy_leaves_out(tmp_path):
    """Derived copies of the frames and caches stay behind; the model files, record, split and labels go."""
    src = make_run(tmp_path)
    dlc = src / "project"
    (dlc / "labeled-data" / "posehub").mkdir(parents=True)
    (dlc / "labeled-data" / "posehub" / "img00000.png").write_bytes(b"a frame DeepLabCut's project links")
    (dlc / "labeled-data" / "posehub" / "CollectedData_me.csv").write_text("scorer,me\n")
    train = dlc / "dlc-models-pytorch" / "iteration-0" / "posehubJan1-trainset80shuffle1" / "train"
    train.mkdir(parents=True)
    for name in ("init-scratch.pt", "init-imagenet.pt", "snapshot-002.pt", "pytorch_config.yaml", "learning_stats.csv"):
        (train / name).write_bytes(b"x")
    (src / "model" / "__pycache__").mkdir()
    (src / "model" / "__pycache__" / "x.pyc").write_bytes(b"x")
    for name in ("labels_gt.train.0.slp", "training_config.yaml", "training_log.csv"):
        (src / "model" / name).write_bytes(b"x")  # sleap-nn's model folder: small, kept
    for name in ("model.json", "split.json", "metrics.json"):
        (src / name).write_text("{}")
    kept = sorted(p.as_posix() for p in run_files(src))
    assert kept == ["metrics.json", "model.json", "model/best.ckpt", "model/labels_gt.train.0.slp",
                    "model/training_config.yaml", "model/training_log.csv",
                    "project/dlc-models-pytorch/iteration-0/posehubJan1-trainset80shuffle1/train/learning_stats.csv",
                    "project/dlc-models-pytorch/iteration-0/posehubJan1-trainset80shuffle1/train/pytorch_config.yaml",
                    "project/dlc-models-pytorch/iteration-0/posehubJan1-trainset80shuffle1/train/snapshot-002.pt",
                    "project/labeled-data/posehub/CollectedData_me.csv", "run.json", "split.json"]
    dest = tmp_path / "copy"
    copy_run(src, str(dest))
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == kept


def test_copy_to_a_local_bucket_folder(tmp_path):
    dest = tmp_path / "home-bucket" / "runs" / "r1"
    assert copy_run(make_run(tmp_path), str(dest), LocalFileSystem()) == str(dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["model", "model/best.ckpt", "run.json"]


def test_copy_to_s3(tmp_path):
    from s3server import MotoServer

    s3 = MotoServer(tmp_path).start()
    try:
        s3.client("s3").create_bucket(Bucket="posehub-home")
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3.url)
        url = "s3://posehub-home/alice/runs/r1"
        assert copy_run(make_run(tmp_path), url, fs) == url
        keys = sorted(o["Key"] for o in s3.client("s3").list_objects_v2(Bucket="posehub-home")["Contents"])
        assert keys == ["alice/runs/r1/model/best.ckpt", "alice/runs/r1/run.json"]
    finally:
        s3.stop()
