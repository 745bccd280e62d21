"""The real hub, proxy and single-user servers on loopback, driven over HTTP."""

import json
import os
import stat
import time

import pytest
import requests

from hubfixture import (
    Hub, offered_profiles, process_env, server_processes, spawn_form_xsrf, spawn_with_form, wait_for, wait_ready,
)

pytestmark = pytest.mark.slow


def test_first_start_prints_admin_password_once(hub, tmp_path):
    pw_file = hub.state_dir / "admin-password"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    password = hub.admin_password
    assert f"First start: admin account 'admin', password: {password}" in hub.log()
    assert hub.log().count(password) == 1
    hub.stop()
    before = len(hub.log())
    hub.start()
    assert password not in hub.log()[before:]
    assert f"Admin account 'admin': password in {pw_file}" in hub.log()[before:]
    hub.session("admin", password)  # still valid after the restart


def test_wrong_password_is_refused(hub):
    hub.create_user("alice", "correct-horse-9")
    s = requests.Session()
    with pytest.raises(AssertionError):
        hub.login(s, "alice", "wrong-password")


def test_spawn_page_offers_only_allowed_profiles(hub):
    hub.create_user("alice", "correct-horse-9")
    hub.create_user("sam", "correct-horse-9")  # in group staff (config)
    alice_page, _ = spawn_form_xsrf(hub, hub.session("alice", "correct-horse-9"))
    sam_page, _ = spawn_form_xsrf(hub, hub.session("sam", "correct-horse-9"))
    assert offered_profiles(alice_page) == ["cpu-small"]
    assert offered_profiles(sam_page) == ["cpu-small", "cpu-staff"]
    assert "1 CPU · 1G RAM · $0.10/h" in alice_page


def test_disallowed_profile_refused_by_form_and_api(hub):
    hub.create_user("alice", "correct-horse-9")
    s = hub.session("alice", "correct-horse-9")
    r = spawn_with_form(hub, s, "cpu-staff")
    assert r.status_code == 403
    assert "You may not use the profile &#39;Staff CPU&#39;." in r.text
    r = hub.api("POST", "/users/alice/server", json={"profile": "cpu-staff"})
    assert r.status_code == 403
    assert "You may not use the profile 'Staff CPU'." in r.json()["message"]
    r = hub.api("POST", "/users/alice/server", json={"profile": "no-such"})
    assert r.status_code == 400 and "Unknown profile 'no-such'." in r.json()["message"]
    assert hub.api("GET", "/users/alice").json()["servers"] == {}
    assert server_processes(hub, "alice") == []


def test_spawn_reaches_jupyterlab_with_profile_environment_and_buckets(hub, hub_config):
    hub.create_user("alice", "correct-horse-9")
    s = hub.session("alice", "correct-horse-9")
    r = spawn_with_form(hub, s, "cpu-small")
    assert r.url.endswith("/hub/spawn-pending/alice")
    wait_ready(hub, "alice")
    lab = s.get(f"{hub.url}/user/alice/lab", timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    [pid] = server_processes(hub, "alice")
    env = process_env(pid)
    home = hub.home("alice")
    assert env["HOME"] == str(home)
    assert env["POSEHUB_PROFILE"] == "cpu-small"
    assert env["PATH"].split(":")[0].endswith(".envs/base/bin")
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert (home / "home-bucket").resolve() == hub.bucket("posehub-home") / "alice"
    assert (home / "buckets" / "openfield-demo").is_dir()
    # Ctrl-C (SIGINT) stops the hub, the proxy and every server it started.
    hub.stop()
    wait_for(lambda: server_processes(hub, "alice") == [], timeout=30, what="alice's server to stop")


@pytest.fixture
def unbuilt_config(hub_config):
    hub_config["images"]["tracking"] = {"description": "an image whose environment is never built in tests"}
    hub_config["profiles"].append(
        {"slug": "tracking", "display_name": "Tracking", "image": "tracking", "price_per_hour": 1.0}
    )
    return hub_config


def test_unbuilt_environment_is_explained(unbuilt_config, tmp_path):
    hub = Hub(unbuilt_config, tmp_path).start()
    try:
        hub.create_user("alice", "correct-horse-9")
        s = hub.session("alice", "correct-horse-9")
        page, _ = spawn_form_xsrf(hub, s)
        assert offered_profiles(page) == ["cpu-small", "tracking"]
        assert "The environment of image &#39;tracking&#39; has not been built on this machine yet." in page
        assert "<code>make env IMAGE=tracking</code>" in page
        assert 'value="tracking"\n      disabled' in page
        r = spawn_with_form(hub, s, "tracking")
        assert r.status_code == 409
        assert "Build it on the hub machine with: make env IMAGE=tracking" in r.text
        assert server_processes(hub, "alice") == []
    finally:
        hub.stop()


@pytest.fixture
def gpu_config(hub_config):
    hub_config["gpus"] = {"devices": [0]}
    hub_config["profiles"].append(
        {"slug": "gpu", "display_name": "One GPU", "image": "base", "gpus": 1, "price_per_hour": 1.2}
    )
    return hub_config


def test_gpus_are_exclusive(gpu_config, tmp_path):
    hub = Hub(gpu_config, tmp_path).start()
    try:
        for name in ("alice", "bob"):
            hub.create_user(name, "correct-horse-9")
        alice, bob = hub.session("alice", "correct-horse-9"), hub.session("bob", "correct-horse-9")
        spawn_with_form(hub, alice, "gpu")
        wait_ready(hub, "alice")
        [pid] = server_processes(hub, "alice")
        assert process_env(pid)["CUDA_VISIBLE_DEVICES"] == "0"

        page, _ = spawn_form_xsrf(hub, bob)
        # the pool the Dask Gateway's workers share (tests/test_dask_gateway.py)
        assert json.loads((hub.state_dir / "gpus.json").read_text())["owners"] == {"0": "server:alice/"}
        message = ("This profile needs 1 GPU, but only 0 of 1 is free (1 in use by other servers or Dask workers). "
                   "Pick a CPU profile or try again when one is released.")
        assert message in page
        r = spawn_with_form(hub, bob, "gpu")
        assert r.status_code == 409 and message in r.text
        assert server_processes(hub, "bob") == []

        assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
        wait_for(lambda: not hub.api("GET", "/users/alice").json()["servers"], what="alice's server to stop")
        spawn_with_form(hub, bob, "gpu")
        wait_ready(hub, "bob")
        [pid] = server_processes(hub, "bob")
        assert process_env(pid)["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        hub.stop()


def test_restart_keeps_users_homes_and_state(hub):
    hub.create_user("alice", "correct-horse-9")
    s = hub.session("alice", "correct-horse-9")
    spawn_with_form(hub, s, "cpu-small")
    wait_ready(hub, "alice")
    (hub.home("alice") / "notes.txt").write_text("keep me")
    hub.stop()
    t0 = time.monotonic()
    hub.start()
    assert time.monotonic() - t0 < 60
    s = hub.session("alice", "correct-horse-9")  # the account survived
    assert (hub.home("alice") / "notes.txt").read_text() == "keep me"
    spawn_with_form(hub, s, "cpu-small")
    wait_ready(hub, "alice")
    names = {u["name"] for u in hub.api("GET", "/users").json()}
    assert {"admin", "alice"} <= names


def test_one_person_mode_runs_servers_as_the_hubs_account_and_says_so(hub_config, tmp_path):
    """isolation.mode: one-person-no-isolation (one person's own workstation): announced at start, the one person's
    server runs as the hub's own account with no control group, and no system account is made."""
    import os
    import pwd

    hub_config["isolation"] = {"mode": "one-person-no-isolation", "account_prefix": "phsolo-"}
    hub_config["groups"] = {}
    hub = Hub(hub_config, tmp_path).start()
    try:
        assert "isolation: one-person-no-isolation: every server runs as this hub's own account" in hub.log()
        s = hub.admin_session()
        assert spawn_with_form(hub, s, "cpu-small").status_code == 200
        wait_ready(hub, "admin")
        [pid] = server_processes(hub, "admin")
        assert os.stat(f"/proc/{pid}").st_uid == os.geteuid()
        assert "posehub-" not in open(f"/proc/{pid}/cgroup").read()
        with pytest.raises(KeyError):
            pwd.getpwnam(hub.account("admin"))
    finally:
        hub.stop()


def test_removing_a_user_keeps_their_account_and_files(hub):
    """Deleting a user in the hub (admin page or API) stops their server but deletes neither their system account
    nor their home: a user removed by mistake, and recreated, finds their work again."""
    import pwd

    hub.create_user("alice", "correct-horse-9")
    s = hub.session("alice", "correct-horse-9")
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    account = pwd.getpwnam(hub.account("alice"))
    (hub.home("alice") / "results.csv").write_text("frame,x\n")
    assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
    wait_for(lambda: server_processes(hub, "alice") == [], timeout=60, what="alice's server to stop")
    wait_for(lambda: hub.api("DELETE", "/users/alice").status_code == 204, timeout=60, what="alice deleted")
    assert pwd.getpwnam(hub.account("alice")).pw_uid == account.pw_uid
    assert (hub.home("alice") / "results.csv").read_text() == "frame,x\n"
    hub.create_user("alice", "correct-horse-9")  # back again: the same account and home
    s = hub.session("alice", "correct-horse-9")
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    [pid] = server_processes(hub, "alice")
    assert os.stat(f"/proc/{pid}").st_uid == account.pw_uid
