"""Watched folders with the real hub, Dask Gateway and (second hub) the S3 test server.

A tiny SLEAP model is trained and a clip cut from the open-field video at test time. Alice declares a watch
on her home prefix ``incoming/``; the clip copied there is analysed (as alice, on her gateway cluster,
charged to her) within WITHIN seconds, and its results appear under ``analysed/``. Copying it again, and
restarting the hub, do not analyse it again. A corrupt video fails with its reason and starts no cluster
(nothing charged). Over budget, the watch is paused with a notice on alice's home page and cannot be
resumed. Bob cannot see or change alice's watches. The same on S3 (moto's server, STS credentials).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import requests

from hubfixture import REPO, Hub, pose_config, wait_for

from cost_reports.core import CostReporter
from posehub.config import load
from posehub.hub import isolation

pytestmark = [pytest.mark.slow]
POSE_PY = REPO / ".envs" / "pose" / "bin" / "python"
DATA = REPO.parent / "shared" / "data" / "openfield"
PASSWORD = "correct-horse-9"
POLL = 2
WITHIN = 180  # seconds from the copy to the results, stated in the README (a 2-core machine, a cold cluster)
ROLE = "arn:aws:iam::123456789012:role/posehub-users"


def watch_config(tmp: Path) -> dict:
    cfg = pose_config(tmp / "state")
    cfg["profiles"][-1].update(cpu=1, memory="3G")
    cfg["dask"].update({"enabled": True, "worker_profiles": ["pose-cpu"], "meter_interval_seconds": 1})
    cfg["watch"].update({"poll_seconds": POLL, "settle_seconds": 1, "max_running": 1, "chunk_frames": 24, "batch": 8})
    cfg["costs"]["check_interval_seconds"] = 2
    return cfg


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny trained SLEAP model and two short clips (tests/analyze/analyze_steps.py)."""
    if not POSE_PY.exists():
        pytest.fail(f"the pose image's environment is not built ({POSE_PY}): `make test` builds it")
    tmp = tmp_path_factory.mktemp("watch-assets")
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO / 'tests' / 'analyze')!r})
        import analyze_steps as steps
        data, work = Path({str(DATA)!r}), Path({str(tmp)!r})
        model = steps.train(work, data)
        a = steps.cut(data / steps.VIDEO, work / "clip1.mp4", 100, 40)
        b = steps.cut(data / steps.VIDEO, work / "clip2.mp4", 900, 32)
        print("OUT=" + json.dumps({{"model": str(model), "clips": [str(a), str(b)]}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO / "extensions"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    r = subprocess.run([str(POSE_PY), "-c", code], capture_output=True, text=True, timeout=600, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("OUT=")]
    assert r.returncode == 0 and lines, r.stderr[-4000:]
    out = json.loads(lines[-1][4:])
    broken = tmp / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    return {"model": Path(out["model"]), "clips": [Path(c) for c in out["clips"]], "broken": broken}


def give(path: Path, uid: int, gid: int) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chown(p, uid, gid)


def alice_with_model(hub: Hub, assets) -> tuple[int, int]:
    """Alice's account, her model in ~/runs/tiny (as if she trained it)."""
    acct = isolation.account(load(hub.config_file), "alice")
    run = hub.home("alice") / "runs" / "tiny"
    shutil.copytree(assets["model"], run)
    give(hub.home("alice") / "runs", acct.uid, acct.gid)
    return acct.uid, acct.gid


def token(hub: Hub, user: str) -> str:
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "test", "expires_in": 3600})
    r.raise_for_status()
    return r.json()["token"]


def wapi(hub: Hub, tok: str, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{hub.url}/services/watch/api/{path}", headers={"Authorization": f"token {tok}"},
                            timeout=30, **kw)


def cost_api(hub: Hub, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{hub.url}/services/cost/api/{path}",
                            headers={"Authorization": f"token {hub.api_token()}"}, timeout=30, **kw)


def items(hub: Hub, tok: str, wid: int) -> list[dict]:
    r = wapi(hub, tok, "GET", f"watches/{wid}/items")
    assert r.ok, r.text
    return r.json()["items"]


def worker_spans(hub: Hub, user: str) -> list:
    rep = CostReporter(load(hub.config_file))
    return [s for s in rep.ledger.spans(rep.period(), user) if s.kind == "dask-worker"]


def job_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "posehub.watch.job"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


def wait_items(hub, tok, wid, n, timeout, what):
    def ended():
        its = items(hub, tok, wid)
        return its if len(its) >= n and all(i["state"] in ("done", "failed") for i in its) else None
    try:
        return wait_for(ended, timeout=timeout, interval=1, what=what)
    except TimeoutError:
        print(hub.log()[-8000:])
        raise


WATCH = {"bucket": "home", "prefix": "incoming/", "model": "~/runs/tiny", "profile": "pose-cpu",
         "out_prefix": "analysed/"}


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory, assets):
    tmp = tmp_path_factory.mktemp("watch-local")
    hub = Hub(watch_config(tmp), tmp).start()
    try:
        for user in ("alice", "bob"):
            hub.create_user(user, PASSWORD)
            hub.session(user, PASSWORD)  # signed in once: only then does the hub know them
        yield hub
    finally:
        hub.stop()
        print(f"\n----- hub log (last lines) -----\n{hub.log()[-6000:]}")


def test_a_video_copied_into_a_watched_local_bucket_is_analysed_once(local_hub, assets):
    hub = local_hub
    uid, gid = alice_with_model(hub, assets)
    home_bucket = hub.bucket("posehub-home") / "alice"  # what her workspace links as ~/home-bucket
    (home_bucket / "incoming").mkdir(parents=True)
    give(home_bucket, uid, gid)
    home_bucket.chmod(0o700)
    alice, bob = token(hub, "alice"), token(hub, "bob")

    # bad declarations: the reason, and no watch made
    for change, message in [({"bucket": "lab-secrets"}, "You may not read bucket 'lab-secrets'"),
                            ({"out_bucket": "openfield-demo"}, "bucket 'openfield-demo' is read-only for you"),
                            ({"profile": "nope"}, "Worker profile 'nope' is not one you may use"),
                            ({"prefix": "../bob/"}, "may not contain '..'")]:
        r = wapi(hub, alice, "POST", "watches", json={**WATCH, **change})
        assert r.status_code == 400 and message in r.json()["message"], (change, r.text)
    r = wapi(hub, alice, "POST", "watches", data=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    r = wapi(hub, bob, "POST", "watches", json={**WATCH, "owner": "alice"})
    assert r.status_code == 403 and "Only admins" in r.json()["message"]
    assert wapi(hub, alice, "GET", "watches").json()["watches"] == []

    r = wapi(hub, alice, "POST", "watches", json=WATCH)
    assert r.status_code == 201, r.text
    w = r.json()
    assert (w["owner"], w["state"], w["model"], w["out_prefix"]) == ("alice", "active", "~/runs/tiny", "analysed/")
    wid = w["id"]

    # bob sees nothing of it and can change nothing
    assert wapi(hub, bob, "GET", "watches").json()["watches"] == []
    for method, path in [("GET", f"watches/{wid}/items"), ("POST", f"watches/{wid}/pause"), ("DELETE", f"watches/{wid}")]:
        assert wapi(hub, bob, method, path).status_code == 404, (method, path)
    assert wapi(hub, alice, "GET", "watches").json()["watches"][0]["state"] == "active"

    # a clip arrives: analysed within WITHIN seconds, as alice, charged to her
    target = home_bucket / "incoming" / "clip1.mp4"
    shutil.copy(assets["clips"][0], target)
    os.chown(target, uid, gid)
    t0 = time.monotonic()
    (item,) = wait_items(hub, alice, wid, 1, WITHIN, "the clip's analysis")
    elapsed = time.monotonic() - t0
    print(f"analysed {elapsed:.0f} s after the copy")
    assert item["state"] == "done", item
    assert item["key"] == "incoming/clip1.mp4" and item["result"]["frames"] == 40
    out = home_bucket / "analysed"
    for name in ("clip1.posehub.csv", "clip1.predictions.slp", "clip1.analysis.json"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_uid == uid  # written by alice's own process
    record = json.loads((out / "clip1.analysis.json").read_text())
    assert record["video"]["frames"] == 40 if "video" in record and isinstance(record["video"], dict) else True
    spans = worker_spans(hub, "alice")
    assert spans, "the analysis's workers were not charged to alice"

    # the same video copied again, a hub restart: not analysed twice
    shutil.copy(assets["clips"][0], target)
    os.chown(target, uid, gid)
    time.sleep(4 * POLL + 2)
    hub.stop()
    hub.start()
    time.sleep(4 * POLL + 2)
    its = items(hub, alice, wid)
    assert [(i["key"], i["state"], i["attempts"]) for i in its] == [("incoming/clip1.mp4", "done", 1)], its
    assert len(worker_spans(hub, "alice")) == len(spans)

    # a corrupt video: failed with the reason, no cluster started for it (nothing charged)
    bad = home_bucket / "incoming" / "broken.mp4"
    shutil.copy(assets["broken"], bad)
    os.chown(bad, uid, gid)
    its = wait_items(hub, alice, wid, 2, 120, "the broken video's result")
    broken = next(i for i in its if i["key"] == "incoming/broken.mp4")
    assert broken["state"] == "failed" and "not a readable video" in broken["error"], broken
    assert len(worker_spans(hub, "alice")) == len(spans)

    # from inside a workspace: posehub.watch.client with alice's token
    env = {"PATH": os.defpath, "PYTHONPATH": str(REPO / "extensions"), "JUPYTERHUB_API_TOKEN": alice,
           "POSEHUB_WATCH_URL": f"{hub.url}/services/watch/"}
    code = ("import json; from posehub.watch import client as c\n"
            f"p = c.pause_watch({wid}); l = c.list_watches(); r = c.resume_watch({wid})\n"
            "try:\n    c.pause_watch(999)\n    e = ''\nexcept c.WatchError as x:\n    e = str(x)\n"
            "print(json.dumps([p['state'], len(l), r['state'], e]))")
    r = subprocess.run([str(POSE_PY), "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == ["paused", 1, "active", "no watch #999 of yours"], r.stderr

    # the page: alice's watch with its videos; bob's page shows none of it
    s = hub.session("alice", PASSWORD)
    page = s.get(f"{hub.url}/services/watch/", timeout=30)
    assert page.ok and f'data-watch="{wid}"' in page.text and "incoming/clip1.mp4: done" in page.text
    page_b = hub.session("bob", PASSWORD).get(f"{hub.url}/services/watch/", timeout=30)
    assert page_b.ok and "No watched folders yet." in page_b.text and "clip1" not in page_b.text

    # over budget: paused, with a notice on her home page; resuming is refused while it lasts
    assert cost_api(hub, "PUT", "budgets/user/alice", json={"amount": 0.01, "reason": "test"}).ok
    try:
        wait_for(lambda: wapi(hub, alice, "GET", "watches").json()["watches"][0]["state"] == "paused",
                 timeout=30, interval=1, what="the watch paused")
        w = wapi(hub, alice, "GET", "watches").json()["watches"][0]
        assert "Not enough budget" in w["reason"], w
        shutil.copy(assets["clips"][1], home_bucket / "incoming" / "clip2.mp4")
        os.chown(home_bucket / "incoming" / "clip2.mp4", uid, gid)
        home = s.get(f"{hub.url}/hub/home", timeout=30).text
        assert f"Your watched folder #{wid} (home/incoming/) is paused: Not enough budget" in home
        r = wapi(hub, alice, "POST", f"watches/{wid}/resume")
        assert r.status_code == 409 and "Not resumed: Not enough budget" in r.json()["message"]
        time.sleep(3 * POLL)
        assert len(items(hub, alice, wid)) == 2  # clip2 waits
    finally:
        assert cost_api(hub, "DELETE", "budgets/user/alice?reason=test").ok
    r = wapi(hub, alice, "POST", f"watches/{wid}/resume")
    assert r.ok and r.json()["state"] == "active", r.text

    # the hub restarted while clip2 is analysed: its job stops with the service, and runs again once
    wait_for(lambda: any(i["state"] == "running" for i in items(hub, alice, wid)), timeout=60, interval=0.5,
             what="clip2 running")
    hub.stop()
    wait_for(lambda: not job_processes(), timeout=30, interval=0.5, what="the watch job to stop with the service")
    hub.start()
    its = wait_items(hub, alice, wid, 3, WITHIN, "clip2 after resuming")
    clip2 = next(i for i in its if i["key"] == "incoming/clip2.mp4")
    assert clip2["state"] == "done" and clip2["attempts"] == 2, clip2
    assert (home_bucket / "analysed" / "clip2.analysis.json").is_file()
    # no cluster left running at alice's cost, not even the one of the attempt the restart cut short
    rep = CostReporter(load(hub.config_file))
    wait_for(lambda: not rep.ledger.open_spans("alice", kind="dask-worker"), timeout=60, interval=1,
             what="alice's watch clusters to be gone")
    assert f"Your watched folder #{wid}" not in s.get(f"{hub.url}/hub/home", timeout=30).text


# ---------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def s3_hub(tmp_path_factory, assets):
    from s3server import MotoServer

    tmp = tmp_path_factory.mktemp("watch-s3")
    server = MotoServer(tmp).start()
    hub = None
    try:
        c = server.client("s3")
        for b in ("openfield-demo", "posehub-home"):
            c.create_bucket(Bucket=b)
        cfg = watch_config(tmp)
        cfg["buckets"] = {
            "backend": "s3", "endpoint_url": server.url, "hub_keys_file": str(server.keys_file(tmp / "hub-keys")),
            "sts": {"role_arn": ROLE, "duration_seconds": 3600}, "mount": {"timeout_seconds": 3},
            "shared": [{"name": "openfield-demo"}], "home": {"name": "posehub-home"},
        }
        hub = Hub(cfg, tmp).start()
        hub.create_user("alice", PASSWORD)
        hub.session("alice", PASSWORD)
        yield hub, c
    finally:
        if hub is not None:
            hub.stop()
            print(f"\n----- hub log (last lines) -----\n{hub.log()[-6000:]}")
        server.stop()


def test_a_video_put_into_a_watched_s3_prefix_is_analysed_once(s3_hub, assets):
    hub, s3 = s3_hub
    alice_with_model(hub, assets)
    alice = token(hub, "alice")
    r = wapi(hub, alice, "POST", "watches", json=WATCH)
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    body = assets["clips"][1].read_bytes()
    s3.put_object(Bucket="posehub-home", Key="alice/incoming/clip2.mp4", Body=body)
    t0 = time.monotonic()
    (item,) = wait_items(hub, alice, wid, 1, WITHIN, "the S3 clip's analysis")
    print(f"analysed {time.monotonic() - t0:.0f} s after the upload")
    assert item["state"] == "done", item
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="posehub-home", Prefix="alice/analysed/")["Contents"]}
    assert {"alice/analysed/clip2.posehub.csv", "alice/analysed/clip2.predictions.slp",
            "alice/analysed/clip2.analysis.json"} <= keys, keys
    assert item["result"]["files"]["csv"] == "s3://posehub-home/alice/analysed/clip2.posehub.csv"
    # uploaded again (same bytes, same ETag): not analysed again
    s3.put_object(Bucket="posehub-home", Key="alice/incoming/clip2.mp4", Body=body)
    time.sleep(4 * POLL + 2)
    assert [(i["key"], i["attempts"]) for i in items(hub, alice, wid)] == [("incoming/clip2.mp4", 1)]
    # the job's copy of the video is gone from alice's home; her token for the job is deleted
    assert not list((hub.home("alice") / ".posehub" / "watch").rglob("*.mp4"))
    toks = hub.api("GET", "/users/alice/tokens").json()["api_tokens"]
    assert not [t for t in toks if (t.get("note") or "").startswith("posehub watch")], toks
