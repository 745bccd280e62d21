"""The open-field example copied into the demo bucket: from ../shared, or downloaded, or a clear error."""

import urllib.error

import pytest
import yaml

from posehub import demodata
from posehub.config import load


def cfg_for(tmp_path, **buckets):
    data = {"hub": {"state_dir": str(tmp_path / "state"), "data_dir": str(tmp_path / "data")}, "images": {"base": {}},
            "profiles": [{"slug": "cpu", "display_name": "CPU", "image": "base", "price_per_hour": 0.1}],
            "buckets": {"demo_bucket": "openfield-demo", "shared": [{"name": "openfield-demo"}], **buckets}}
    p = tmp_path / "posehub.yaml"
    p.write_text(yaml.safe_dump(data))
    return load(p)


def test_local_bucket_gets_the_example_once(tmp_path, openfield):
    cfg = cfg_for(tmp_path)
    said = []
    where = demodata.install(cfg, said.append)
    labels = tmp_path / "data" / "buckets" / "openfield-demo" / demodata.LABELS
    assert where == str(tmp_path / "data" / "buckets" / "openfield-demo")
    assert labels.read_bytes() == (openfield / demodata.LABELS).read_bytes()
    assert "(120 files copied, 0 already there)" in said[-1]
    demodata.install(cfg, said.append)
    assert "(0 files copied, 120 already there)" in said[-1]


def test_download_fails_clearly_offline(tmp_path, monkeypatch):
    """Without ../shared the files are downloaded; here the network is refused (our fetch function raises
    as urllib does with no route), and the error says what to do. Nothing is left half-written."""
    monkeypatch.setattr(demodata, "SHARED", tmp_path / "no-shared")
    monkeypatch.setattr(demodata, "DOWNLOADS", tmp_path / "downloads")

    def offline(url, timeout):
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    with pytest.raises(demodata.DemoDataError) as e:
        demodata.source(say=lambda m: None, fetch=offline)
    assert str(e.value).startswith(f"cannot download {demodata.UPSTREAM}config.yaml: [Errno 101] Network is "
                                   "unreachable. The example notebooks need DeepLabCut's open-field example")
    assert not list((tmp_path / "downloads").rglob("*.part"))


def test_download_from_a_served_copy(tmp_path, monkeypatch, openfield):
    """The download path for real, from a local HTTP server serving the same files as DeepLabCut's repository."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(openfield))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(demodata, "SHARED", tmp_path / "no-shared")
        monkeypatch.setattr(demodata, "DOWNLOADS", tmp_path / "downloads")
        monkeypatch.setattr(demodata, "UPSTREAM", f"http://127.0.0.1:{srv.server_port}/")
        got = demodata.source(say=lambda m: None)
    finally:
        srv.shutdown()
    assert (got / "videos/m3v1mp4.mp4").read_bytes() == (openfield / "videos/m3v1mp4.mp4").read_bytes()


def test_s3_demo_bucket(tmp_path, openfield):
    from s3server import MotoServer

    s3 = MotoServer(tmp_path).start()
    try:
        keys = tmp_path / "hub-keys"
        keys.write_text("testing:testing\n")
        c = s3.client("s3")
        c.create_bucket(Bucket="openfield-demo")
        s3cfg = {"backend": "s3", "endpoint_url": s3.url, "hub_keys_file": str(keys),
                 "sts": {"role_arn": "arn:aws:iam::123456789012:role/posehub"}}
        assert demodata.install(cfg_for(tmp_path, **s3cfg), lambda m: None) == "s3://openfield-demo/"
        body = c.get_object(Bucket="openfield-demo", Key=demodata.LABELS)["Body"].read()
        assert body == (openfield / demodata.LABELS).read_bytes()
        said = []
        demodata.install(cfg_for(tmp_path, **s3cfg), said.append)
        assert "(0 files uploaded, 120 already there)" in said[-1]
        missing = cfg_for(tmp_path, **s3cfg, demo_bucket="nope", shared=[{"name": "nope"}])
        with pytest.raises(demodata.DemoDataError, match="cannot write the open-field example to s3://nope/"):
            demodata.install(missing, lambda m: None)
    finally:
        s3.stop()
