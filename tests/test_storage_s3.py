"""Buckets mounted with the real s3fs-fuse against a real S3 server on loopback (moto's server mode),
and the same data through posehub.storage. The hub's part (workspace.prepare/release) is called
directly here; tests/test_storage_hub.py does the same through a real hub."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from hubfixture import wait_for
from posehub import storage
from posehub.hub import mounts, s3creds, s3plan, workspace
from posehub.config import DEFAULT_CONFIG, validate
from s3server import MotoServer

ROLE = "arn:aws:iam::123456789012:role/posehub-users"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    c = server.client("s3")
    for b in ("openfield-demo", "lab-scratch", "other-lab", "posehub-home"):
        c.create_bucket(Bucket=b)
    c.put_object(Bucket="openfield-demo", Key="labels/CollectedData.csv", Body=b"scorer,x\n")
    c.put_object(Bucket="openfield-demo", Key="videos/m3v1mp4.mp4", Body=os.urandom(20 * 2**20))
    c.put_object(Bucket="posehub-home", Key="alice/notes.txt", Body=b"alice's")
    c.put_object(Bucket="posehub-home", Key="bob/secret.txt", Body=b"bob's")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_auth(tmp_path_factory):
    """A second S3 server with moto's IAM enforcement on: unknown keys are refused."""
    server = MotoServer(tmp_path_factory.mktemp("moto-auth"), auth=True).start()
    server.client("s3").create_bucket(Bucket="guarded")
    yield server
    server.stop()


def config(s3, tmp_path, **buckets):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["hub"]["state_dir"] = str(tmp_path / "state")
    raw["hub"]["data_dir"] = str(tmp_path / "data")
    raw["buckets"] = {
        "backend": "s3", "endpoint_url": s3.url, "hub_keys_file": str(s3.keys_file(tmp_path / "hub-keys")),
        "sts": {"role_arn": ROLE, "duration_seconds": 3600}, "mount": {"timeout_seconds": 3},
        "shared": [{"name": "openfield-demo"}, {"name": "lab-scratch", "read_only": False, "groups": ["lab"]},
                   {"name": "other-lab", "groups": ["other"]}],
        "home": {"name": "posehub-home"},
        **buckets,
    }
    return validate(raw)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home" / "alice"
    h.mkdir(parents=True)
    yield h
    mounts.unmount_under(tmp_path)  # the mounts are in <data_dir>/mounts/alice, outside the home
    assert mounts.mounts_under(tmp_path) == []


def prepared(cfg, home, monkeypatch, user="alice", groups=("lab",), lease=None) -> dict:
    data = workspace.prepare(cfg, user, list(groups), home, lease=lease)
    path = workspace.manifest_file(home)
    monkeypatch.setenv(storage.MANIFEST_ENV, str(path))
    assert json.loads(path.read_text()) == data
    return {b["name"]: b for b in data["buckets"]}


def test_buckets_are_mounted_listed_read_and_written(s3, tmp_path, home, monkeypatch):
    got = prepared(config(s3, tmp_path), home, monkeypatch)
    assert sorted(got) == ["home", "lab-scratch", "openfield-demo"]  # not the other lab's bucket
    assert all(b["mounted"] and not b["note"] for b in got.values())
    assert not (home / "buckets" / "other-lab").exists()
    root = workspace.mount_root(config(s3, tmp_path), home)  # outside the home, linked into it
    assert sorted(mounts.mounts_under(root)) == sorted(
        [root / "buckets/openfield-demo", root / "buckets/lab-scratch", root / "home-bucket"])
    assert (home / "buckets/openfield-demo").resolve() == root / "buckets/openfield-demo"
    demo = home / "buckets" / "openfield-demo"
    assert sorted(os.listdir(demo)) == ["labels", "videos"]
    assert (demo / "labels" / "CollectedData.csv").read_bytes() == b"scorer,x\n"
    assert (demo / "videos" / "m3v1mp4.mp4").stat().st_size == 20 * 2**20
    # a write through the mount is an object in S3
    (home / "buckets" / "lab-scratch" / "run1").mkdir()
    (home / "buckets" / "lab-scratch" / "run1" / "out.csv").write_text("a,b\n")
    (home / "home-bucket" / "from-mount.txt").write_text("written in JupyterLab")
    wait_for(lambda: s3.objects("posehub-home", "alice/").get("alice/from-mount.txt") == b"written in JupyterLab",
             timeout=20, what="object written through the mount")
    assert s3.objects("lab-scratch")["run1/out.csv"] == b"a,b\n"
    # ... and the same data from Python, with the server's own (STS) credentials
    fs = storage.filesystem()
    assert fs.cat(storage.url("home", "from-mount.txt")) == b"written in JupyterLab"
    key = fs.storage_options["session"].botocore_credentials().get_credentials().get_frozen_credentials().access_key
    assert key == got["home"]["credentials"]["access_key_id"] != s3.keys[0]  # not the hub's keys
    with storage.open("home", "from-python.txt", "w") as f:
        f.write("written in a notebook")
    wait_for(lambda: (home / "home-bucket" / "from-python.txt").exists(), timeout=20, what="object seen in the mount")
    assert (home / "home-bucket" / "from-python.txt").read_text() == "written in a notebook"


def test_static_keys_stay_with_the_hub_and_python_reads_through_the_mount(s3, tmp_path, home, monkeypatch):
    keys = s3.keys_file(tmp_path / "lab-keys", ("LABKEYID", "lab-static-secret"))
    cfg = config(s3, tmp_path, shared=[{"name": "openfield-demo", "keys_file": str(keys)}])
    got = prepared(cfg, home, monkeypatch)
    assert got["openfield-demo"]["mounted"] and got["openfield-demo"]["credentials"] is None
    assert got["home"]["credentials"]["session_token"]  # STS for the rest
    assert "lab-static-secret" not in workspace.manifest_file(home).read_text()
    assert storage.url("openfield-demo", "labels") == str(home / "buckets" / "openfield-demo" / "labels")
    fs = storage.filesystem("openfield-demo")
    assert fs.cat(storage.url("openfield-demo", "labels/CollectedData.csv")) == b"scorer,x\n"


def test_storage_reads_stream_and_seek(s3, tmp_path, home, monkeypatch):
    prepared(config(s3, tmp_path), home, monkeypatch)
    data = s3.objects("openfield-demo", "videos/")["videos/m3v1mp4.mp4"]
    with storage.open("openfield-demo", "videos/m3v1mp4.mp4") as f:
        assert f.read() == data
    with storage.open("openfield-demo", "videos/m3v1mp4.mp4") as f:
        f.seek(2_000_000)
        assert f.read(100) == data[2_000_000:2_000_100]  # small read: read-ahead
        f.seek(5)
        assert f.read(10) == data[5:15]  # back: a new stream
        assert f.read(9_000_000) == data[15:9_000_015]  # a long read straight from the stream
        assert f.read(7) == data[9_000_015:9_000_022]
        f.seek(len(data) - 3)
        assert f.read(10) == data[-3:] and f.read(10) == b""
    with pytest.raises(FileNotFoundError):
        storage.open("openfield-demo", "videos/none.mp4").read()


def test_the_home_mount_holds_only_the_users_prefix(s3, tmp_path, home, monkeypatch):
    cfg = config(s3, tmp_path)
    prepared(cfg, home, monkeypatch)
    mine = home / "home-bucket"
    assert "notes.txt" in os.listdir(mine) and "secret.txt" not in os.listdir(mine)
    assert not (mine / "bob").exists() and not (mine / ".." / "bob").exists()
    assert mine.resolve() == workspace.mount_root(cfg, home) / "home-bucket"  # the mount, not the bucket
    assert "bob/secret.txt" in s3.objects("posehub-home")  # it is there, just not reachable from the mount


def test_read_only_bucket_refuses_writes_and_nothing_changes(s3, tmp_path, home, monkeypatch):
    prepared(config(s3, tmp_path), home, monkeypatch)
    before = s3.objects("openfield-demo")
    demo = home / "buckets" / "openfield-demo"
    for attempt in (lambda: (demo / "new.txt").write_text("x"),
                    lambda: (demo / "labels" / "CollectedData.csv").open("a").write("y"),
                    lambda: (demo / "labels" / "CollectedData.csv").unlink(),
                    lambda: (demo / "newdir").mkdir()):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    fs = storage.filesystem("openfield-demo")
    with pytest.raises(PermissionError, match="read-only"):
        fs.pipe(storage.url("openfield-demo", "new.txt"), b"x")
    with pytest.raises(PermissionError, match="read-only"):
        fs.rm(storage.url("openfield-demo", "labels/CollectedData.csv"))
    assert s3.objects("openfield-demo") == before


def test_unreachable_buckets_are_skipped_with_a_note_and_the_rest_mounts(s3, s3_auth, tmp_path, home,
                                                                         monkeypatch, caplog):
    bogus = s3_auth.keys_file(tmp_path / "bogus-keys", ("AKIAWRONGWRONGWRONG1", "nope"))
    cfg = config(s3, tmp_path, shared=[
        {"name": "openfield-demo"},
        {"name": "no-such-bucket"},
        {"name": "endpoint-down", "endpoint_url": "http://127.0.0.1:9"},
        {"name": "guarded", "endpoint_url": s3_auth.url, "keys_file": str(bogus)},
    ])
    with caplog.at_level(logging.WARNING, logger="posehub.hub.workspace"):
        got = prepared(cfg, home, monkeypatch)
    expected = {
        "no-such-bucket": f"the bucket 'no-such-bucket' does not exist at {s3.url}",
        "endpoint-down": "the S3 endpoint http://127.0.0.1:9 did not answer",
        "guarded": f"the credentials for bucket 'guarded' were refused by {s3_auth.url} (InvalidAccessKeyId)",
    }
    for name, reason in expected.items():
        assert not got[name]["mounted"] and got[name]["note"].startswith(reason)
        note = (home / "buckets" / name / mounts.NOTE_FILE).read_text()
        assert f"s3://{name}/ is not mounted here." in note and reason in note
        assert any(reason in r.getMessage() and "alice" in r.getMessage() for r in caplog.records)
        assert not mounts.is_mounted(home / "buckets" / name)
    assert got["openfield-demo"]["mounted"] and got["home"]["mounted"]
    assert "labels" in os.listdir(home / "buckets" / "openfield-demo")


def test_refused_sts_credentials_skip_the_sts_buckets(s3_auth, tmp_path, home, monkeypatch):
    # the hub's own keys are unknown to this server: STS refuses, the mounts are skipped, the server still starts
    cfg = config(s3_auth, tmp_path, hub_keys_file=str(s3_auth.keys_file(tmp_path / "k", ("AKIAUNKNOWN000000000", "x"))),
                 shared=[{"name": "guarded"}])
    got = prepared(cfg, home, monkeypatch)
    assert not got["guarded"]["mounted"] and not got["home"]["mounted"]
    assert got["guarded"]["note"].startswith("STS refused to issue credentials for alice")
    assert "STS refused" in (home / "home-bucket" / mounts.NOTE_FILE).read_text()


def test_a_later_successful_mount_removes_the_note(s3, tmp_path, home, monkeypatch):
    cfg = config(s3, tmp_path, shared=[{"name": "late-bucket"}])
    assert not prepared(cfg, home, monkeypatch)["late-bucket"]["mounted"]
    s3.client("s3").create_bucket(Bucket="late-bucket")
    workspace.release(cfg, home)
    assert prepared(cfg, home, monkeypatch)["late-bucket"]["mounted"]
    workspace.release(cfg, home)
    assert not (home / "buckets" / "late-bucket" / mounts.NOTE_FILE).exists()


def test_mounts_left_by_a_crash_are_cleaned_up(s3, tmp_path, home, monkeypatch):
    cfg = config(s3, tmp_path)
    prepared(cfg, home, monkeypatch)
    # s3fs dies (as in a crash of the machine's processes): the mount is left dead
    pids = subprocess.run(["pgrep", "-f", f"s3fs .* {tmp_path}/"], capture_output=True, text=True).stdout.split()
    assert pids
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    with pytest.raises(OSError):
        os.listdir(home / "home-bucket")  # "Transport endpoint is not connected"
    assert mounts.mounts_under(tmp_path)
    workspace.release(cfg, home)
    assert mounts.mounts_under(tmp_path) == []
    got = prepared(cfg, home, monkeypatch)  # and the next start mounts again
    assert got["home"]["mounted"] and "notes.txt" in os.listdir(home / "home-bucket")


def test_the_hubs_keys_never_reach_the_workspace(s3, tmp_path, home, monkeypatch):
    cfg = config(s3, tmp_path)
    prepared(cfg, home, monkeypatch)
    text = workspace.manifest_file(home).read_text()
    assert s3.keys[1] not in text and s3.keys[0] not in text
    assert oct(workspace.manifest_file(home).stat().st_mode & 0o777) == "0o600"
    creds = json.loads(text)["buckets"][0]["credentials"]
    assert creds["session_token"] and creds["expiration"]


def test_sts_policy_enforced_by_moto_iam(s3_auth, tmp_path):
    """moto does not apply session policies, but it does evaluate a role's own policy: give a role
    exactly the session policy the hub issues for alice and check what those credentials can do."""
    admin = s3_auth.client("s3")
    for b in ("demo-data", "home-data"):
        admin.create_bucket(Bucket=b)
    admin.put_object(Bucket="demo-data", Key="a.csv", Body=b"demo")
    admin.put_object(Bucket="home-data", Key="alice/a.txt", Body=b"alice")
    admin.put_object(Bucket="home-data", Key="bob/b.txt", Body=b"bob")
    cfg = config(s3_auth, tmp_path, shared=[{"name": "demo-data"}], home={"name": "home-data"})
    policy = s3plan.session_policy(s3plan.plan(cfg, "alice", []))
    iam = s3_auth.client("iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                     "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="alice-as-policy", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName="alice-as-policy", PolicyName="session", PolicyDocument=json.dumps(policy))
    role_arn = iam.get_role(RoleName="alice-as-policy")["Role"]["Arn"]
    cfg = config(s3_auth, tmp_path, shared=[{"name": "demo-data"}], home={"name": "home-data"},
                 sts={"role_arn": role_arn})
    creds = s3creds.assume_role(cfg, "alice", s3plan.plan(cfg, "alice", []))
    s3 = s3_auth.client("s3", (creds.access_key_id, creds.secret_access_key), creds.session_token)
    assert s3.get_object(Bucket="demo-data", Key="a.csv")["Body"].read() == b"demo"
    assert s3.get_object(Bucket="home-data", Key="alice/a.txt")["Body"].read() == b"alice"
    s3.put_object(Bucket="home-data", Key="alice/new.txt", Body=b"ok")
    for denied in (lambda: s3.get_object(Bucket="home-data", Key="bob/b.txt"),
                   lambda: s3.put_object(Bucket="home-data", Key="bob/x.txt", Body=b"x"),
                   lambda: s3.put_object(Bucket="demo-data", Key="x.csv", Body=b"x"),
                   lambda: s3.delete_object(Bucket="demo-data", Key="a.csv")):
        with pytest.raises(ClientError) as e:
            denied()
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    assert sorted(s3_auth.objects("home-data")) == ["alice/a.txt", "alice/new.txt", "bob/b.txt"]
    assert sorted(s3_auth.objects("demo-data")) == ["a.csv"]


def test_local_backend_needs_no_s3(tmp_path, monkeypatch):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["hub"]["state_dir"] = str(tmp_path / "state")
    raw["hub"]["data_dir"] = str(tmp_path / "data")
    cfg = validate(raw)
    home = tmp_path / "home-local"
    home.mkdir()
    got = prepared(cfg, home, monkeypatch, groups=())
    assert got["home"]["url"] == str(tmp_path / "data" / "buckets" / "posehub-home" / "alice")
    with storage.open("home", "x.txt", "w") as f:
        f.write("local")
    assert (home / "home-bucket" / "x.txt").read_text() == "local"
    assert storage.url("openfield-demo") == str(tmp_path / "data" / "buckets" / "openfield-demo")


def test_storage_is_billed_by_the_bytes_of_the_users_own_objects(s3, tmp_path):
    """The cost service's S3 sizer: the objects under ``alice/`` only (not ``alice2/``), listed with the hub's keys."""
    from cost_reports.service import home_sizer

    c = s3.client("s3")
    c.put_object(Bucket="posehub-home", Key="alice/videos/a.mp4", Body=b"v" * 5000)
    c.put_object(Bucket="posehub-home", Key="alice2/big.bin", Body=b"x" * 70000)
    sizer = home_sizer(config(s3, tmp_path))
    expected = sum(o["Size"] for o in c.list_objects_v2(Bucket="posehub-home", Prefix="alice/")["Contents"])
    assert sizer("alice") == expected >= 5000
    assert sizer("alice2") == 70000
    assert sizer("nobody") == 0
