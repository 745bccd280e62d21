"""Idle servers stopped by the real jupyterhub-idle-culler, run by a real hub as a managed service, with
PoseHub's per-profile limits (posehub.culling): an idle GPU server is stopped, its span closed and its GPU
(declared: this machine has none) given back; a server whose kernel is at work is left alone; JupyterLab's
question "how long have I been idle" does not count as activity."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests
import yaml

from hubfixture import server_processes, spawn_with_form, wait_for, wait_ready
from kernel import Kernel
from posehub import culling
from posehub.config import DEFAULT_CONFIG, validate
from test_cost_service import ledger

PASSWORD = "correct-horse-9"
pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- the rules (pure)


def config(**culling_cfg):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["culling"] = culling_cfg
    raw["profiles"] = [
        {"slug": "cpu", "display_name": "CPU", "image": "base", "price_per_hour": 0.1},
        {"slug": "gpu", "display_name": "GPU", "image": "base", "gpus": 1, "price_per_hour": 1.2},
        {"slug": "long", "display_name": "Long", "image": "base", "price_per_hour": 0.1, "idle_minutes": 240},
    ]
    return validate(raw)


def test_each_profile_has_its_limit_and_gpu_profiles_a_shorter_one():
    cfg = config()
    assert [culling.idle_limit(cfg, p) for p in cfg["profiles"]] == [3600, 1800, 4 * 3600]
    assert culling.idle_limit(cfg, None) == 3600  # a server of a profile since removed: the default
    assert culling.should_cull(cfg, "gpu", timedelta(minutes=30))
    assert not culling.should_cull(cfg, "cpu", timedelta(minutes=30))
    assert not culling.should_cull(cfg, "long", timedelta(hours=3))
    assert culling.should_cull(cfg, "gone", timedelta(hours=1))
    assert not culling.should_cull(config(enabled=False), "gpu", timedelta(days=3))
    # the culler looks at least as often as asked, its timeout is the shortest limit; activity is reported
    # four times within a limit, at most every 5 minutes
    assert culling.culler_settings(config(check_every_seconds=30, max_age_hours=24)) == {
        "timeout": 1800, "cull_every": 30, "max_age": 86400, "cull_users": False, "remove_named_servers": False,
        "cull_admin_users": True}
    assert culling.activity_interval(1800) == 300 and culling.activity_interval(60) == 15
    assert culling.activity_interval(4) == 5
    arbiter = culling.arbiter(cfg)
    assert arbiter(inactive=timedelta(minutes=31), inactive_limit=1800, server={"state": {"profile": "gpu"}})
    assert not arbiter(inactive=timedelta(minutes=31), inactive_limit=1800, server={"state": {"profile": "cpu"}})
    assert culling.warning(1800, 1300, 10) == {"idle_seconds": 1300, "limit_seconds": 1800, "stops_in_seconds": 500,
                                                "warn": True}
    assert not culling.warning(1800, 600, 10)["warn"]


@pytest.mark.parametrize("bad, message", [
    ({"idle_minutes": 0}, "culling.idle_minutes"),
    ({"check_every_seconds": 0}, "culling.check_every_seconds"),
    ({"max_age_hours": -1}, "culling.max_age_hours"),
    ({"surprise": 1}, "culling"),
])
def test_bad_culling_settings_are_refused(bad, message):
    from posehub.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        config(**bad)


# ---------------------------------------------------------------- a real hub and its culler


LIMIT_MINUTES = 0.25  # 15 s


@pytest.fixture
def hub_config(hub_config):
    hub_config["culling"] = {"enabled": True, "idle_minutes": 10, "gpu_idle_minutes": LIMIT_MINUTES,
                             "check_every_seconds": 3, "warn_minutes": 0.2}
    hub_config["gpus"] = {"devices": [0]}
    hub_config["profiles"] += [
        {"slug": "gpu", "display_name": "One GPU", "image": "base", "gpus": 1, "price_per_hour": 1.2},
        {"slug": "quick", "display_name": "Quick", "image": "base", "price_per_hour": 0.1,
         "idle_minutes": LIMIT_MINUTES},
    ]
    return hub_config


def idle_status(hub, user, token):
    r = requests.get(f"{hub.url}/user/{user}/api/posehub/idle", headers={"Authorization": f"token {token}"},
                     timeout=10)
    r.raise_for_status()
    return r.json()


def test_an_idle_gpu_server_is_stopped_and_a_busy_one_is_not(hub):
    for name in ("alice", "bob"):
        hub.create_user(name, PASSWORD)
    assert spawn_with_form(hub, hub.session("alice", PASSWORD), "gpu").status_code == 200
    assert spawn_with_form(hub, hub.session("bob", PASSWORD), "quick").status_code == 200
    wait_ready(hub, "alice")
    wait_ready(hub, "bob")
    assert json.loads((hub.state_dir / "gpus.json").read_text())["owners"] == {"0": "server:alice/"}
    (span,) = ledger(hub).open_spans("alice", "server")
    bob_kernel = Kernel.start(hub, "bob")
    alice_token = Kernel.token_for(hub, "alice")

    # alice's JupyterLab asks how long it has been idle: it is told, and asking keeps nothing alive
    first = idle_status(hub, "alice", alice_token)
    assert first["culling"] and first["limit_seconds"] == 15 and first["stops_in_seconds"] <= 15
    wait_for(lambda: idle_status(hub, "alice", alice_token)["warn"], timeout=12, interval=1,
             what="the warning before the stop")

    # bob's kernel works for longer than the limit (a cell printing every second: kernel activity)
    started = time.monotonic()
    r = bob_kernel.execute("import time\nfor i in range(40):\n    print(i, flush=True)\n    time.sleep(1)",
                           timeout=120)
    assert r.status == "ok" and r.stdout.split()[-1] == "39"
    assert time.monotonic() - started > 2 * 15

    # meanwhile alice's idle GPU server was stopped: its span closed, its GPU back in the pool
    wait_for(lambda: not hub.api("GET", "/users/alice").json()["servers"], timeout=60, what="alice's server culled")
    assert not server_processes(hub, "alice")
    wait_for(lambda: not ledger(hub).open_spans("alice", "server"), timeout=60, what="alice's span closed")
    (closed,) = [s for s in ledger(hub).spans(span.start.strftime("%Y-%m"), "alice") if s.kind == "server"]
    assert closed.id == span.id and closed.end is not None
    assert json.loads((hub.state_dir / "gpus.json").read_text())["owners"] == {}
    assert "idle-culler" in hub.log() and "Culling server alice" in hub.log()

    # bob's busy server was not
    assert hub.api("GET", "/users/bob").json()["servers"], "bob's busy server was culled"
    assert "Culling server bob" not in hub.log()
    # ... until it too sits idle past its limit
    wait_for(lambda: not hub.api("GET", "/users/bob").json()["servers"], timeout=90, what="bob's server culled")
