"""STS credentials renewed while a server runs: the hub's renewal loop and credential endpoint, and the real
s3fs mounts and posehub.storage filesystems reading on past the end of their first credentials, against a
test S3 server whose STS credentials last 20 seconds and are refused with ExpiredToken after their end
(tests/motoserve.py). tests/test_storage_hub.py does the same through a real hub and a user's kernel."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests
from botocore.exceptions import ClientError

from hubfixture import free_port, server_processes, spawn_with_form, wait_for, wait_ready
from kernel import Kernel
from posehub import storage
from posehub.hub import mounts, s3broker, s3creds, s3lease, s3plan, workspace
from s3server import MotoServer
from test_storage_s3 import config, home, prepared  # noqa: F401 - the home fixture

LIFE = 20  # seconds the test STS server's credentials last
S3_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


# ---------------------------------------------------------------- when (pure)


def test_credentials_are_renewed_before_either_client_would_ask():
    # 25 minutes before the end: s3fs asks again 20 minutes before it, botocore 15
    assert s3lease.renew_at(T0, T0 + timedelta(hours=12)) == T0 + timedelta(hours=11, minutes=35)
    assert s3lease.renew_at(T0, T0 + timedelta(hours=1)) == T0 + timedelta(minutes=35)
    # short credentials: half-way
    assert s3lease.renew_at(T0, T0 + timedelta(seconds=20)) == T0 + timedelta(seconds=10)
    assert s3lease.renew_at(T0, T0 - timedelta(seconds=5)) == T0 - timedelta(seconds=5)  # already ended: now
    # a failed renewal is tried again sooner as the end nears, a minute apart at most, a second at least
    assert s3lease.retry_at(T0, T0 + timedelta(hours=1)) == T0 + timedelta(seconds=60)
    assert s3lease.retry_at(T0, T0 + timedelta(minutes=5)) == T0 + timedelta(seconds=30)
    assert s3lease.retry_at(T0, T0 + timedelta(seconds=3)) == T0 + timedelta(seconds=1)
    assert s3lease.retry_at(T0, None) == T0 + timedelta(seconds=1)


def creds_until(ends: datetime, key: str = "ASIA1") -> s3creds.Credentials:
    return s3creds.Credentials(key, "secret", "token", ends.isoformat())


def test_the_renewal_loop_renews_on_time_and_tries_again_after_failures(caplog):
    clock = [T0]
    slept: list[float] = []
    fetched: list[s3creds.Credentials] = []
    published: list[str] = []
    outcomes = iter([s3creds.CredentialsError("STS at AWS could not be reached"), "ok", "ok"])
    publishes = iter([OSError("disk full"), "ok", "ok"])

    def fetch():
        o = next(outcomes)
        if isinstance(o, Exception):
            raise o
        c = creds_until(clock[0] + timedelta(hours=1), f"ASIA{len(fetched)}")
        fetched.append(c)
        return c

    def publish(c):
        o = next(publishes)
        if isinstance(o, Exception):
            raise o
        published.append(c.access_key_id)

    class Done(Exception):
        pass

    async def sleep(seconds):
        slept.append(seconds)
        if len(slept) == 5:
            raise Done
        clock[0] += timedelta(seconds=seconds)

    lease = s3broker.Lease("alice")
    lease.set(creds_until(T0 + timedelta(hours=1), "ASIA-FIRST"), T0)
    with pytest.raises(Done):
        asyncio.run(s3broker.keep_renewed(lease, fetch, publish, now=lambda: clock[0], sleep=sleep))
    # waited until 25 minutes before the end; STS failed: again in a minute (a tenth of the 25 minutes left is
    # more); renewed, but the manifest could not be written: again in a minute; written; waited until 25 minutes
    # before the new end; renewed and written; waiting again
    assert slept == [35 * 60, 60, 60, 34 * 60, 35 * 60]
    assert [c.access_key_id for c in fetched] == ["ASIA0", "ASIA1"]
    assert published == ["ASIA0", "ASIA1"] and lease.credentials.access_key_id == "ASIA1"
    assert lease.issued == T0 + timedelta(minutes=71)
    log = caplog.text
    assert "renewing the S3 credentials failed (STS at AWS could not be reached)" in log
    assert "could not be written to the manifest (disk full)" in log


# ---------------------------------------------------------------- the endpoint


@pytest.fixture
def hub_loop():
    """An event loop in a thread, standing for the hub's."""
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def on_loop(loop, fn, *args):
    async def call():
        return fn(*args)

    return asyncio.run_coroutine_threadsafe(call(), loop).result(10)


def test_the_endpoint_answers_only_a_known_secret_from_this_machine(hub_loop):
    port = free_port()
    url = on_loop(hub_loop, s3broker.serve, port) + s3plan.S3FS_CREDENTIALS_PATH
    lease = s3broker.Lease("alice", role_arn="arn:aws:iam::1:role/r")
    s3broker.register(lease)
    try:
        r = requests.get(url + lease.relative_uri, timeout=5)
        assert r.status_code == 503  # nothing issued yet
        lease.set(creds_until(datetime.now(timezone.utc) + timedelta(hours=1)), datetime.now(timezone.utc))
        r = requests.get(url + lease.relative_uri, timeout=5)
        assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
        doc = r.json()
        assert (doc["AccessKeyId"], doc["SecretAccessKey"], doc["Token"]) == ("ASIA1", "secret", "token")
        assert doc["Expiration"].endswith("Z") and doc["RoleArn"] == "arn:aws:iam::1:role/r"
        # another server's secret, none, or a request that came through the proxy: nothing
        assert requests.get(url + "?token=" + "x" * 43, timeout=5).status_code == 403
        assert requests.get(url, timeout=5).status_code == 403
        r = requests.get(url + lease.relative_uri, headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
        assert r.status_code == 404 and "ASIA1" not in r.text
        # ended credentials are not handed out
        lease.set(creds_until(datetime.now(timezone.utc) - timedelta(seconds=1)), datetime.now(timezone.utc))
        assert requests.get(url + lease.relative_uri, timeout=5).status_code == 503
        s3broker.unregister(lease)
        assert requests.get(url + lease.relative_uri, timeout=5).status_code == 403
        # a port that is taken is named
        with pytest.raises(s3broker.BrokerError, match=f"cannot listen on 127.0.0.1:{port}") as e:
            s3broker._servers.pop(port, None)  # forget it, as a second hub process would not know it
            on_loop(hub_loop, s3broker.serve, port)
        assert "buckets.sts.credentials_port" in str(e.value)
    finally:
        s3broker.unregister(lease)


# ---------------------------------------------------------------- mounts and Python past the end


@pytest.fixture
def expiring(tmp_path):
    server = MotoServer(tmp_path, sts_max_seconds=LIFE).start()  # (moto's IAM enforcement refuses s3fs's listings)
    server.arn = server.role("posehub-users", S3_ALL)
    c = server.client("s3")
    c.create_bucket(Bucket="posehub-home")
    c.put_object(Bucket="posehub-home", Key="alice/before.txt", Body=b"before")
    c.put_object(Bucket="posehub-home", Key="bob/before.txt", Body=b"before")
    yield server
    server.stop()


def s3fs_processes(mountpoint) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        try:
            argv = open(f"/proc/{d}/cmdline").read().split("\0")
        except (OSError, ValueError):
            continue
        if argv and os.path.basename(argv[0]) == "s3fs" and str(mountpoint) in argv:
            out.append(int(d))
    return out


WORKER = """
import pickle, sys
import s3fs
options = pickle.loads(sys.stdin.buffer.read())
print(s3fs.S3FileSystem(**options).cat(sys.argv[1]).decode())
"""


def served(expiring, tmp_path, hub_loop):
    """A config whose credential endpoint the 'hub' loop serves, and alice's lease, registered there."""
    port = free_port()
    cfg = config(expiring, tmp_path, shared=[], home={"name": "posehub-home"},
                 sts={"role_arn": expiring.arn, "duration_seconds": 900, "credentials_port": port})
    on_loop(hub_loop, s3broker.serve, port)
    lease = s3broker.Lease("alice", role_arn=expiring.arn)
    s3broker.register(lease)
    return cfg, lease


def test_mounts_and_python_read_on_after_the_first_credentials_end(expiring, tmp_path, home, monkeypatch, hub_loop):
    cfg, lease = served(expiring, tmp_path, hub_loop)
    # bob's workspace, prepared the old way (no lease): the control that shows the end is real
    bob_home = tmp_path / "home" / "bob"
    bob_home.mkdir(parents=True)
    bob = workspace.prepare(cfg, "bob", [], bob_home)
    assert bob["buckets"][0]["mounted"], bob["buckets"][0]["note"]
    got = prepared(cfg, home, monkeypatch, groups=(), lease=lease)
    assert got["home"]["mounted"], got["home"]["note"]
    first = lease.credentials
    first_end = s3lease.parse_time(first.expiration)
    assert first_end - datetime.now(timezone.utc) <= timedelta(seconds=LIFE)
    # the mount's s3fs has no keys of its own: only the endpoint and, in its environment, the secret
    (pid,) = s3fs_processes(tmp_path / "data" / "mounts" / "alice" / "home-bucket")
    cmdline = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    endpoint = s3broker.base_url(cfg["buckets"]["sts"]["credentials_port"])
    assert f"ecs -o ibm_iam_endpoint={endpoint}" in cmdline and lease.secret not in cmdline
    environ = open(f"/proc/{pid}/environ").read().split("\0")
    assert f"{s3plan.S3FS_CREDENTIALS_ENV}={lease.relative_uri}" in environ
    assert not any(e.startswith("AWS_ACCESS_KEY_ID=") for e in environ)

    fs = storage.filesystem()  # made with the first credentials, and kept
    assert fs.cat(storage.url("home", "before.txt")) == b"before"
    worker_options = pickle.dumps(storage.storage_options("home"))  # as a Dask task carries them

    data = got  # the manifest, as the spawner keeps it
    manifest = {"backend": "s3", "user": "alice", "buckets": list(data.values())}
    accesses = [a for a in s3plan.plan(cfg, "alice", []) if a.uses_sts]
    renewal = asyncio.run_coroutine_threadsafe(s3broker.keep_renewed(
        lease, lambda: s3creds.assume_role(cfg, "alice", accesses),
        lambda c: workspace.write_manifest(home, workspace.with_credentials(manifest, c))), hub_loop)
    try:
        # two ends pass
        wait_for(lambda: datetime.now(timezone.utc) > first_end + timedelta(seconds=LIFE + 2), timeout=3 * LIFE + 10,
                 interval=1, what="two ends of the credentials")
        assert lease.credentials.access_key_id != first.access_key_id
        old = expiring.client("s3", (first.access_key_id, first.secret_access_key), first.session_token)
        with pytest.raises(ClientError) as e:
            old.get_object(Bucket="posehub-home", Key="alice/before.txt")
        assert e.value.response["Error"]["Code"] == "ExpiredToken"

        admin = expiring.client("s3")
        admin.put_object(Bucket="posehub-home", Key="alice/after.txt", Body=b"written after the end")
        admin.put_object(Bucket="posehub-home", Key="bob/after.txt", Body=b"written after the end")
        # the mount reads what is new and writes
        assert (home / "home-bucket" / "after.txt").read_bytes() == b"written after the end"
        (home / "home-bucket" / "from-mount.txt").write_text("through the mount")
        wait_for(lambda: expiring.objects("posehub-home", "alice/").get("alice/from-mount.txt") == b"through the mount",
                 timeout=20, what="a write through the mount after the end")
        # Python: the same filesystem object, a streaming read, and a worker's copy rebuilt from its options
        assert fs.cat(storage.url("home", "after.txt")) == b"written after the end"
        with storage.open("home", "after.txt") as f:
            assert f.read() == b"written after the end"
        fs.pipe(storage.url("home", "from-python.txt"), b"from python")
        worker = subprocess.run([sys.executable, "-c", WORKER, storage.url("home", "after.txt")],
                                input=worker_options, capture_output=True, timeout=120)
        assert worker.returncode == 0, worker.stderr.decode()[-2000:]
        assert worker.stdout.decode() == "written after the end\n"
        assert json.loads(workspace.manifest_file(home).read_text())["buckets"][0]["credentials"]["access_key_id"] \
            == lease.credentials.access_key_id

        # the control: bob's mount kept its first credentials, which S3 now refuses (s3fs 1.90 shows an empty
        # file or an error)
        try:
            seen = (bob_home / "home-bucket" / "after.txt").read_bytes()
        except OSError:
            seen = None
        assert seen != b"written after the end"
    finally:
        renewal.cancel()
        s3broker.unregister(lease)
        mounts.unmount_under(tmp_path)


def test_a_mount_whose_endpoint_has_nothing_fails_reads_until_it_has(expiring, tmp_path, home, monkeypatch,
                                                                    hub_loop):
    """After a hub restart the lease is known again but empty until renewed: the mount's reads fail in the
    meantime (s3fs asks at each request once its set is near its end) and work again once it is renewed."""
    cfg, lease = served(expiring, tmp_path, hub_loop)
    try:
        got = prepared(cfg, home, monkeypatch, groups=(), lease=lease)
        assert got["home"]["mounted"], got["home"]["note"]
        restarted = s3broker.Lease("alice", role_arn=expiring.arn, secret="", digest=lease.digest)  # saved state
        s3broker.unregister(lease)
        s3broker.register(restarted)
        wait_for(lambda: datetime.now(timezone.utc) > s3lease.parse_time(lease.credentials.expiration),
                 timeout=LIFE + 5, interval=0.5, what="the first credentials' end")
        expiring.client("s3").put_object(Bucket="posehub-home", Key="alice/new.txt", Body=b"new")
        try:
            seen = (home / "home-bucket" / "new.txt").read_bytes()
        except OSError:
            seen = None
        assert seen != b"new"
        accesses = [a for a in s3plan.plan(cfg, "alice", []) if a.uses_sts]
        restarted.set(s3creds.assume_role(cfg, "alice", accesses), datetime.now(timezone.utc))
        wait_for(lambda: os.path.exists(home / "home-bucket" / "new.txt"), timeout=20, interval=0.5,
                 what="the mount answering again")
        assert (home / "home-bucket" / "new.txt").read_bytes() == b"new"
    finally:
        s3broker.unregister(lease)
        mounts.unmount_under(tmp_path)


# ---------------------------------------------------------------- through a real hub, across a hub restart


@pytest.fixture
def hub_config(hub_config, expiring, tmp_path):
    hub_config["buckets"] = {
        "backend": "s3", "endpoint_url": expiring.url, "hub_keys_file": str(expiring.keys_file(tmp_path / "hub-keys")),
        "sts": {"role_arn": expiring.arn, "duration_seconds": 900, "credentials_port": free_port()},
        "mount": {"timeout_seconds": 3}, "shared": [], "home": {"name": "posehub-home"},
    }
    return hub_config


KERNEL_SETUP = """
import os
from distributed import Client, LocalCluster
from posehub import storage
fs = storage.filesystem()
options = storage.storage_options()
cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="300MB")
client = Client(cluster)

def read_on_worker(url, options):
    import s3fs
    return s3fs.S3FileSystem(**options).cat(url).decode()

print(fs.cat(storage.url("home", "before.txt")).decode(), client.submit(read_on_worker, storage.url("home", "before.txt"), options).result())
"""

KERNEL_AFTER = """
url = storage.url("home", "after.txt")
print(fs.cat(url).decode())
print(client.submit(read_on_worker, url, options, pure=False).result())
print(open(os.path.expanduser("~/home-bucket/after.txt")).read())
"""


def test_a_running_server_reads_on_past_its_first_credentials_and_a_hub_restart(hub, expiring):
    hub.create_user("alice", "correct-horse-9")
    s = hub.session("alice", "correct-horse-9")
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    kernel = Kernel.start(hub, "alice")
    r = kernel.execute(KERNEL_SETUP, timeout=180)
    assert r.error is None and r.stdout.split() == ["before", "before"], (r.error, r.stderr[-2000:])
    mount = hub.data_dir / "mounts" / hub.account("alice") / "home-bucket"
    (pid,) = s3fs_processes(mount)
    relative = next(e for e in open(f"/proc/{pid}/environ").read().split("\0")
                    if e.startswith(s3plan.S3FS_CREDENTIALS_ENV + "=")).split("=", 1)[1]
    first = json.loads((hub.home("alice") / ".posehub" / "storage.json").read_text())["buckets"][0]["credentials"]
    wait_for(lambda: "storage of alice: S3 credentials renewed" in hub.log(), timeout=LIFE, what="a renewal")

    # the hub and its proxy die; the server, its kernel, its workers and its mounts live on
    os.killpg(hub.proc.pid, signal.SIGKILL)
    hub.proc.wait()
    restarted_at = len(hub.log())
    hub.start()
    wait_for(lambda: "storage of alice: S3 credentials renewed" in hub.log()[restarted_at:], timeout=30,
             what="a renewal after the restart")
    end = s3lease.parse_time(first["expiration"])
    wait_for(lambda: datetime.now(timezone.utc) > end + timedelta(seconds=LIFE + 2), timeout=3 * LIFE, interval=1,
             what="two ends of the first credentials")
    expiring.client("s3").put_object(Bucket="posehub-home", Key="alice/after.txt", Body=b"after")
    r = kernel.execute(KERNEL_AFTER, timeout=120)
    assert r.error is None and r.stdout.split() == ["after", "after", "after"], (r.error, r.stderr[-2000:])
    now = json.loads((hub.home("alice") / ".posehub" / "storage.json").read_text())["buckets"][0]["credentials"]
    assert now["access_key_id"] != first["access_key_id"]
    secret = relative.split("=", 1)[1]
    assert secret not in hub.log()  # the endpoint's secret is never logged, nor kept by the hub:
    assert secret.encode() not in b"".join(p.read_bytes() for p in hub.state_dir.glob("jupyterhub.sqlite*"))
    assert secret not in hub.api("GET", "/users/alice").text  # (the API shows servers' state to admins)

    # once the server stops, its secret gets nothing
    endpoint = s3broker.base_url(hub.config["buckets"]["sts"]["credentials_port"]) + s3plan.S3FS_CREDENTIALS_PATH
    assert requests.get(endpoint + relative, timeout=5).status_code == 200
    kernel.execute("client.close(); cluster.close()", timeout=60)
    assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
    wait_for(lambda: not server_processes(hub, "alice"), timeout=60, what="server stopped")
    assert requests.get(endpoint + relative, timeout=5).status_code == 403


BOB_TRIES = """
import json, os, urllib.error, urllib.request
out = {{}}

def get(url, headers={{}}):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code

for what, path in (("environ", "/proc/{pid}/environ"), ("manifest", "{manifest}")):
    try:
        open(path).read()
        out[what] = "read"
    except OSError as e:
        out[what] = type(e).__name__
out["guessed"] = get("{endpoint}?token=" + "A" * 43)
out["no secret"] = get("{endpoint}")
out["alice's idle status"] = get("{hub}/user/alice/api/posehub/idle",
                                 {{"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}})
seen = open("/proc/mounts").read()
for d in os.listdir("/proc"):
    try:
        seen += open(f"/proc/{{d}}/cmdline").read()
    except OSError:
        pass
out["seen"] = seen
print(json.dumps(out))
"""


def test_another_user_gets_nothing_of_alices_credentials_from_a_terminal(hub, expiring):
    """bob, in his own kernel (his account, his server's token), tries alice's mount secret and credentials:
    her s3fs processes' environment, guesses at the endpoint, her manifest, what /proc shows, her idle status."""
    for name in ("alice", "bob"):
        hub.create_user(name, "correct-horse-9")
        assert spawn_with_form(hub, hub.session(name, "correct-horse-9"), "cpu-small").status_code == 200
        wait_ready(hub, name)
    (pid,) = s3fs_processes(hub.data_dir / "mounts" / hub.account("alice") / "home-bucket")
    secret = next(e for e in open(f"/proc/{pid}/environ").read().split("\0")
                  if e.startswith(s3plan.S3FS_CREDENTIALS_ENV + "=")).split("?token=", 1)[1]
    manifest = hub.home("alice") / ".posehub" / "storage.json"
    alice_key = json.loads(manifest.read_text())["buckets"][0]["credentials"]["access_key_id"]
    endpoint = s3broker.base_url(hub.config["buckets"]["sts"]["credentials_port"]) + s3plan.S3FS_CREDENTIALS_PATH
    r = Kernel.start(hub, "bob").execute(BOB_TRIES.format(pid=pid, manifest=manifest, endpoint=endpoint,
                                                          hub=hub.url), timeout=120)
    assert r.error is None, (r.error, r.stderr[-2000:])
    out = json.loads(r.stdout)
    assert out["environ"] == "PermissionError" and out["manifest"] == "PermissionError"
    assert out["guessed"] == 403 and out["no secret"] == 403
    assert out["alice's idle status"] == 403
    assert secret not in out["seen"] and alice_key not in out["seen"]
    assert requests.get(f"{endpoint}?token={secret}", timeout=5).status_code == 200  # the secret itself works
