"""The admin page and its REST API: groups and members, who may use each profile, idle limits; every change
applies to the next spawn without a hub restart, is in the audit log, and bad input changes nothing.

Everything is real: the hub, the cost service (which serves the admin page), the hub's REST API for groups,
Chromium for the page."""

from pathlib import Path

import pytest
import requests

from browser import browser, login
from cost_reports import profile_rules as rules
from cost_reports.profile_rules import ADMINS_ONLY, OPEN, Access, ProfileSettings
from kernel import Kernel
from hubfixture import offered_profiles, spawn_form_xsrf, wait_for, wait_ready
from test_cost_service import PASSWORD, cost_api, make_user, user_token, wait_cost_service

DOCS = Path(__file__).resolve().parents[1] / "docs"
GPU = {"slug": "gpu", "display_name": "One GPU", "image": "base", "cpu": 1, "memory": "1G", "gpus": 1,
       "price_per_hour": 1.21, "allowed_groups": []}


# ---------------------------------------------------------------- the rules (pure)


def test_access_rules_grant_revoke_and_describe():
    staff = Access.of({"allowed_groups": ["staff"]})
    assert staff == Access((), ("staff",)) and staff.describe() == "groups staff"
    assert Access.of({}) == OPEN and OPEN.describe() == "everyone" and ADMINS_ONLY.describe() == "admins only"
    both = rules.grant(rules.grant(staff, "user", "bob", "GPU"), "group", "imaging", "GPU")
    assert both.describe() == "groups imaging, staff; users bob"
    assert rules.revoke(both, "group", "staff", "GPU") == Access(("bob",), ("imaging",))
    assert Access.from_json(both.to_json()) == both and Access.from_json(None) == OPEN
    for bad, message in [
        (lambda: rules.grant(staff, "group", "staff", "GPU"), "group staff may use 'GPU' already"),
        (lambda: rules.revoke(staff, "user", "bob", "GPU"), "user bob is not among those allowed 'GPU' (groups staff)"),
        (lambda: rules.grant(OPEN, "user", "bob", "GPU"), "'GPU' is open to everyone already: restrict it first"),
        (lambda: rules.grant(staff, "team", "x", "GPU"), "unknown scope 'team'"),
        (lambda: rules.idle_minutes("2", "GPU"), "idle limit of 'GPU' must be from 5 minutes to a week"),
        (lambda: rules.idle_minutes("soon", "GPU"), "idle limit of 'GPU' must be a number of minutes"),
        (lambda: rules.profile_named([GPU], "tpu"), "there is no profile 'tpu' (profiles: gpu)"),
    ]:
        with pytest.raises(ValueError) as err:
            bad()
        assert str(err.value).startswith(message)


def test_effective_profiles_apply_admins_settings_and_leave_the_config_alone():
    small = {"slug": "small", "display_name": "Small", "gpus": 0}
    settings = ProfileSettings(access={"gpu": Access(("bob",), ())}, idle_minutes={"small": 15.0})
    gpu, sm = rules.effective([GPU, small], settings)
    assert gpu["allowed_users"] == ["bob"] and gpu["allowed_groups"] == [] and GPU["allowed_groups"] == []
    assert sm["idle_minutes"] == 15.0 and "idle_minutes" not in small
    culling = {"idle_minutes": 60, "gpu_idle_minutes": 20}
    assert [rules.idle_minutes_of(culling, p) for p in (GPU, small, sm)] == [20.0, 60.0, 15.0]
    opened = rules.effective([GPU], ProfileSettings(access={"gpu": OPEN}))[0]
    assert opened["allowed_users"] is None and opened["allowed_groups"] is None


# ---------------------------------------------------------------- on a real hub


@pytest.fixture
def hub_config(hub_config):
    hub_config["gpus"] = {"devices": [0]}  # declared: no device is opened by the servers of these tests
    hub_config["profiles"].append(dict(GPU))
    hub_config["groups"]["labadmins"] = {"users": []}
    hub_config["costs"]["admin_groups"] = ["labadmins"]
    return hub_config


def audit(hub) -> list[dict]:
    return cost_api(hub, "GET", "audit").json()["entries"]


@pytest.mark.slow
def test_admin_api_changes_apply_at_the_next_spawn_and_bad_input_changes_nothing(hub):
    make_user(hub, "bob")
    s_bob = hub.session("bob", PASSWORD)
    wait_cost_service(hub)
    profiles = {p["slug"]: p for p in cost_api(hub, "GET", "profiles").json()["profiles"]}
    assert profiles["gpu"]["who"] == "admins only" and profiles["gpu"]["access_source"] == "posehub.yaml"
    assert profiles["cpu-staff"]["who"] == "groups staff" and profiles["cpu-small"]["who"] == "everyone"

    before = audit(hub)
    bad = [
        ("POST", "profiles/tpu/access", {"action": "allow", "scope": "group", "name": "staff"}, 400,
         "there is no profile 'tpu' (profiles: cpu-small, cpu-staff, gpu)"),
        ("POST", "profiles/gpu/access", {"action": "allow", "scope": "group", "name": "nobody"}, 400,
         "unknown group 'nobody'"),
        ("POST", "profiles/gpu/access", {"action": "give", "scope": "group", "name": "staff"}, 400,
         "unknown action 'give'"),
        ("POST", "profiles/gpu/access", {"action": "allow", "scope": "group", "name": "staff", "why": "x"}, 400,
         "unknown field 'why'"),
        ("POST", "profiles/gpu/access", {"action": "remove", "scope": "user", "name": "bob"}, 400,
         "user bob is not among those allowed 'One GPU' (admins only)"),
        ("POST", "profiles/cpu-small/access", {"action": "open"}, 400, "'Small CPU' is open to everyone already"),
        ("POST", "profiles/gpu/access", {"action": "reset"}, 400, "who may use 'One GPU' is as in posehub.yaml already"),
        ("PUT", "profiles/gpu/idle", {"minutes": 1}, 400, "idle limit of 'One GPU' must be from 5 minutes"),
        ("PUT", "profiles/gpu/idle", {}, 400, "minutes is missing"),
        ("PUT", "groups/staff/members/nobody", {}, 400, "unknown user 'nobody'"),
        ("PUT", "groups/nogroup/members/bob", {}, 400, "unknown group 'nogroup'"),
        ("DELETE", "groups/staff/members/sam", None, 400,
         "sam is a member of staff in posehub.yaml, and the hub adds them back at every start: remove them there"),
        ("PUT", "groups/Bad%20Name", {}, 400, "a group name is 1 to 63 lowercase letters"),
    ]
    for method, path, body, status, message in bad:
        r = cost_api(hub, method, path, json=body)
        assert (r.status_code, r.json()["message"][:len(message)]) == (status, message), (path, r.text)
    # a user's own token may not change anything
    r = cost_api(hub, "POST", "profiles/gpu/access", token=user_token(hub, "bob"),
                 json={"action": "allow", "scope": "user", "name": "bob"})
    assert r.status_code == 403
    assert audit(hub) == before
    assert offered_profiles(spawn_form_xsrf(hub, s_bob)[0]) == ["cpu-small"]

    # allowed by name, with an idle limit of 45 minutes: the next spawn has both, no restart
    r = cost_api(hub, "POST", "profiles/gpu/access", json={"action": "allow", "scope": "user", "name": "bob",
                                                            "reason": "thesis"})
    assert r.status_code == 200 and r.json()["old"] == "admins only" and r.json()["new"] == "users bob"
    assert cost_api(hub, "PUT", "profiles/gpu/idle", json={"minutes": 45, "reason": "weekend"}).json()["new"] == "45 min"
    assert offered_profiles(spawn_form_xsrf(hub, s_bob)[0]) == ["cpu-small", "gpu"]
    r = hub.api("POST", "/users/bob/server", json={"profile": "gpu"})
    assert r.status_code in (201, 202), r.text
    wait_ready(hub, "bob")
    state = hub.api("GET", "/users/bob").json()["servers"][""]["state"]
    assert state["profile"] == "gpu" and state["idle_seconds"] == 2700.0
    # from his own JupyterLab, with his server's token, bob can change none of it: not through the API, not in the
    # ledger database where the settings live
    before_attack = audit(hub)
    kernel = Kernel.start(hub, "bob")
    try:
        r = kernel.execute(f"""
import json, os, urllib.error, urllib.request
for method, path, body in [("POST", "api/profiles/gpu/access", {{"action": "open"}}),
                           ("PUT", "api/profiles/gpu/idle", {{"minutes": 10080}}),
                           ("PUT", "api/groups/labadmins/members/bob", {{}}),
                           ("PUT", "api/budgets/user/bob", {{"amount": 99999}})]:
    req = urllib.request.Request(os.environ["POSEHUB_COST_URL"] + path, data=json.dumps(body).encode(), method=method,
                                 headers={{"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"],
                                          "Content-Type": "application/json"}})
    try:
        urllib.request.urlopen(req)
        print(path, "changed")
    except urllib.error.HTTPError as e:
        print(path, e.code)
try:
    open({str(hub.state_dir / 'costs.sqlite')!r}, "rb").read(1)
    print("ledger read")
except PermissionError:
    print("ledger denied")
""")
    finally:
        kernel.shutdown()
    assert r.status == "ok", r
    assert r.stdout.split("\n")[:5] == ["api/profiles/gpu/access 403", "api/profiles/gpu/idle 403",
                                        "api/groups/labadmins/members/bob 403", "api/budgets/user/bob 403",
                                        "ledger denied"], r.stdout
    assert audit(hub) == before_attack
    hub.api("DELETE", "/users/bob/server")
    wait_for(lambda: not hub.api("GET", "/users/bob").json()["servers"], timeout=60, what="bob's server to stop")

    # reset to posehub.yaml: refused again, with a sentence, by the REST API too
    assert cost_api(hub, "POST", "profiles/gpu/access", json={"action": "reset", "reason": "done"}).status_code == 200
    r = hub.api("POST", "/users/bob/server", json={"profile": "gpu"})
    assert r.status_code == 403 and "You may not use the profile 'One GPU'. Ask help@lab.example for access." \
        in r.json()["message"]

    # a member of the admin group may not lock themselves (or everyone) out
    assert cost_api(hub, "PUT", "groups/labadmins/members/bob", json={"reason": "co-admin"}).status_code == 200
    r = cost_api(hub, "DELETE", "groups/labadmins/members/bob", token=user_token(hub, "bob"))
    assert r.status_code == 400 and r.json()["message"].startswith("removing yourself from labadmins would lock you out")
    assert cost_api(hub, "DELETE", "groups/labadmins/members/bob?reason=ok").status_code == 200
    log = [(e["actor"], e["action"], e["scope"], e["name"], e["old"], e["new"]) for e in audit(hub)[len(before):]]
    assert log == [
        ("admin", "allow user bob", "profile", "gpu", "admins only", "users bob"),
        ("admin", "idle limit", "profile", "gpu", "30 min", "45 min"),
        ("admin", "reset", "profile", "gpu", "users bob", "admins only"),
        ("admin", "add bob", "group", "labadmins", "(none)", "bob"),
        ("admin", "remove bob", "group", "labadmins", "bob", "(none)"),
    ]


def change_access(admin, action: str, group: str, reason: str):
    """On the admin page: allow or remove ``group`` on the GPU profile, and wait for the page saying it is saved."""
    gpu = admin.locator("tr[data-profile=gpu]")
    gpu.locator("select[name=scope]").select_option("group")
    gpu.locator(".access-form input[name=name]").fill(group)
    gpu.locator(".access-form input[name=reason]").fill(reason)
    gpu.locator(f"button[value={action}]").click()
    admin.wait_for_selector("#form-saved")


@pytest.mark.browser
@pytest.mark.slow
def test_admin_page_gives_staff_the_gpu_then_takes_it_back(hub):
    make_user(hub, "bob")
    wait_cost_service(hub)
    hub_pid = hub.proc.pid
    DOCS.mkdir(exist_ok=True)
    with browser() as b:
        admin = b.new_page(viewport={"width": 1400, "height": 1000})
        login(admin, hub.url, "admin", hub.admin_password)
        admin.goto(f"{hub.url}/services/cost/admin")
        assert admin.locator("#posehub-navbar img.jpy-logo").count() == 1  # the hub's look
        assert admin.locator("#source-rule").inner_text().startswith("posehub.yaml is the starting point.")
        gpu = admin.locator("tr[data-profile=gpu]")
        assert gpu.locator(".who").inner_text() == "admins only"
        changes = admin.locator("#audit-table tbody tr").count()

        # bad input: a group that does not exist; the page says why and nothing changed
        gpu.locator(".access-form input[name=name]").fill("stafff")
        gpu.locator("button[value=allow]").click()
        admin.wait_for_selector("#form-error")
        assert admin.locator("#form-error").inner_text().startswith("Nothing was changed: unknown group 'stafff'")
        assert admin.locator("tr[data-profile=gpu] .who").inner_text() == "admins only"
        assert admin.locator("#audit-table tbody tr").count() == changes

        # give group staff the GPU profile, then add bob to staff
        change_access(admin, "allow", "staff", "pose training")
        assert admin.locator("tr[data-profile=gpu] .who").inner_text() == "groups staff"
        assert admin.locator("tr[data-profile=gpu] .access-source").inner_text().startswith("from admin page (by admin,")
        staff = admin.locator("tr[data-group=staff]")
        staff.locator("input[name=user]").fill("bob")
        staff.locator("input[name=reason]").fill("joined the lab")
        staff.locator("button[value=add]").click()
        admin.wait_for_selector("#form-saved")
        members = admin.locator("tr[data-group=staff] .members").inner_text()
        assert "bob" in members and "sam" in members and "(posehub.yaml)" in members
        # sam is in posehub.yaml: no button to remove him here
        assert admin.locator("tr[data-group=staff] [data-member=sam] button").count() == 0
        admin.screenshot(path=str(DOCS / "admin-page.png"), full_page=True)

        # bob sees it on his spawn page, without a restart of the hub
        bob = b.new_page(viewport={"width": 1100, "height": 800})
        login(bob, hub.url, "bob", PASSWORD)
        bob.goto(f"{hub.url}/hub/spawn")
        assert bob.locator("#profile-gpu").count() == 1
        assert bob.locator("[data-profile=gpu]").inner_text().strip().startswith("One GPU")
        assert bob.locator("#profile-gpu").is_enabled()

        # taken back while bob's page is open: his spawn is refused with a sentence
        admin.goto(f"{hub.url}/services/cost/admin")
        change_access(admin, "remove", "staff", "project over")
        assert admin.locator("tr[data-profile=gpu] .who").inner_text() == "admins only"
        bob.locator("#profile-gpu").check()
        bob.locator("form#spawn_form [type=submit], form [type=submit]").first.click()
        bob.wait_for_load_state("networkidle")
        assert "You may not use the profile 'One GPU'. Ask help@lab.example for access." in bob.content()
        bob.goto(f"{hub.url}/hub/spawn")
        assert bob.locator("#profile-gpu").count() == 0

        # every change in the log, newest first: who, what, old, new, why
        admin.goto(f"{hub.url}/services/cost/admin#changes")
        rows = [r.inner_text().split("\t") for r in admin.locator("#audit-table tbody tr").all()][:3]
        assert [r[1:] for r in rows] == [
            ["admin", "remove group staff", "profile gpu", "groups staff", "admins only", "project over"],
            ["admin", "add bob", "group staff", "sam", "bob, sam", "joined the lab"],
            ["admin", "allow group staff", "profile gpu", "admins only", "groups staff", "pose training"],
        ]
    assert hub.proc.pid == hub_pid and hub.proc.poll() is None  # the same hub all along
    r = requests.get(f"{hub.url}/hub/api/users/bob", headers={"Authorization": f"token {hub.api_token()}"}, timeout=10)
    assert r.json()["groups"] == ["staff"]
