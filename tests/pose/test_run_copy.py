"""A finished run is copied to the user's home prefix: a local folder, or S3 (a real moto server)."""

import json

import s3fs
from fsspec.implementations.local import LocalFileSystem

from posehub.pose.run import copy_run


def make_run(tmp_path):
    src = tmp_path / "run"
    (src / "model").mkdir(parents=True)
    (src / "model" / "best.ckpt").write_bytes(b"weights")
    (src / "run.json").write_text(json.dumps({"seed": 1}))
    (src / "frames").mkdir()
    (src / "frames" / "00000_img.png").write_bytes(b"a copy of a frame, not worth keeping")
    return src


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
