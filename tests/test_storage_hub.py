"""S3 buckets in workspaces spawned by a real hub: mounted at spawn, reachable from the server's
environment through posehub.storage, unmounted at stop and after the server process crashes."""

from __future__ import annotations

import json
import pwd
import stat
import os
import signal
import subprocess

import pytest

from hubfixture import process_env, server_processes, spawn_with_form, wait_for, wait_ready
from posehub.hub import mounts
from s3server import MotoServer

PASSWORD = "correct-horse-9"
ROLE = "arn:aws:iam::123456789012:role/posehub-users"
pytestmark = pytest.mark.slow


@pytest.fixture
def s3(tmp_path):
    server = MotoServer(tmp_path).start()
    c = server.client("s3")
    for b in ("openfield-demo", "posehub-home"):
        c.create_bucket(Bucket=b)
    c.put_object(Bucket="openfield-demo", Key="labels/CollectedData.csv", Body=b"scorer,x\n")
    yield server
    server.stop()


@pytest.fixture
def hub_config(hub_config, s3, tmp_path):
    hub_config["buckets"] = {
        "backend": "s3", "endpoint_url": s3.url, "hub_keys_file": str(s3.keys_file(tmp_path / "hub-keys")),
        "sts": {"role_arn": ROLE, "duration_seconds": 3600}, "mount": {"timeout_seconds": 3},
        "shared": [{"name": "openfield-demo"}, {"name": "gone-bucket"}],
        "home": {"name": "posehub-home"},
    }
    return hub_config


def test_spawn_mounts_buckets_and_stop_unmounts_them(hub, s3):
    hub.create_user("alice", PASSWORD)
    s = hub.session("alice", PASSWORD)
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    home = hub.home("alice")
    root = hub.data_dir / "mounts" / hub.account("alice")  # mounts live outside the home, linked into it
    assert sorted(mounts.mounts_under(root)) == [root / "buckets" / "openfield-demo", root / "home-bucket"]
    assert (home / "home-bucket").resolve() == root / "home-bucket"
    # the mounts are alice's alone: her uid, mode 0700, in a folder only her account's group may enter
    uid = pwd.getpwnam(hub.account("alice")).pw_uid
    assert (root / "home-bucket").stat().st_uid == uid and stat.S_IMODE((root / "home-bucket").stat().st_mode) == 0o700
    assert stat.S_IMODE(root.stat().st_mode) == 0o750 and root.stat().st_gid == pwd.getpwnam(hub.account("alice")).pw_gid
    for path in (root / "home-bucket", root / "buckets" / "openfield-demo", home):
        other = subprocess.run(["ls", str(path)], user="nobody", group="nogroup", extra_groups=[],
                               capture_output=True, text=True)
        assert other.returncode != 0 and "Permission denied" in other.stderr, path
    gid = pwd.getpwnam(hub.account("alice")).pw_gid
    mine = subprocess.run(["ls", str(home / "home-bucket")], user=uid, group=gid, extra_groups=[],
                          capture_output=True, text=True)
    assert mine.returncode == 0, mine.stderr
    assert (home / "buckets" / "openfield-demo" / "labels" / "CollectedData.csv").read_bytes() == b"scorer,x\n"
    # the bucket that does not exist did not stop the server: a note in the folder and in the hub log
    note = (home / "buckets" / "gone-bucket" / mounts.NOTE_FILE).read_text()
    assert "the bucket 'gone-bucket' does not exist" in note
    assert "storage of alice: s3://gone-bucket/ not mounted at ~/buckets/gone-bucket" in hub.log()

    (pid,) = server_processes(hub, "alice")
    env = process_env(pid)
    assert env["POSEHUB_STORAGE"] == str(home / ".posehub" / "storage.json")
    assert not any(k.startswith("AWS_") for k in env)  # the hub's keys are not in the server's environment
    assert s3.keys[1] not in (home / ".posehub" / "storage.json").read_text()

    # the server's own Python (the image's environment) reaches the same data through posehub.storage
    code = ("from posehub import storage; fs = storage.filesystem();"
            "fs.pipe(storage.url('home', 'hello.txt'), b'from the server env');"
            "print(fs.cat(storage.url('openfield-demo', 'labels/CollectedData.csv')).decode())")
    out = subprocess.run([os.path.join(env["VIRTUAL_ENV"], "bin", "python"), "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "scorer,x\n\n"
    assert s3.objects("posehub-home", "alice/")["alice/hello.txt"] == b"from the server env"
    wait_for(lambda: (home / "home-bucket" / "hello.txt").exists(), timeout=20, what="the object in the mount")

    assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
    wait_for(lambda: not server_processes(hub, "alice"), timeout=60, what="server stopped")
    wait_for(lambda: not mounts.mounts_under(root), timeout=30, what="mounts gone after stop")


def test_mounts_are_cleaned_up_after_the_server_process_crashes(hub, s3):
    hub.create_user("alice", PASSWORD)
    s = hub.session("alice", PASSWORD)
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    home = hub.home("alice")
    root = hub.data_dir / "mounts" / hub.account("alice")
    assert mounts.mounts_under(root)
    for pid in server_processes(hub, "alice"):
        os.kill(pid, signal.SIGKILL)
    # the hub polls its servers (every 30 s by default); once it sees the crash it cleans up
    wait_for(lambda: not mounts.mounts_under(root), timeout=150, interval=1, what="mounts gone after the crash")
    r = hub.api("GET", "/users/alice").json()
    assert r["servers"] == {}
    # a new spawn mounts again
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    assert (home / "buckets" / "openfield-demo" / "labels").is_dir()
    manifest = json.loads((home / ".posehub" / "storage.json").read_text())
    assert {b["name"]: b["mounted"] for b in manifest["buckets"]} == {
        "openfield-demo": True, "gone-bucket": False, "home": True}
