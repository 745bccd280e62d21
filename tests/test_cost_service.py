"""The cost reporter in a real hub: spans from the spawner, the service's pages and API,
refusal at spawn time, enforcement at 100 %, and crash recovery after the hub is killed."""

from __future__ import annotations

import os
import re
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from cost_reports.budget_store import BudgetStore
from cost_reports.budgets import BudgetPolicy
from cost_reports.db import CostDB
from cost_reports.ledger import Ledger
from cost_reports.notices import Notices
from hubfixture import Hub, server_processes, spawn_form_xsrf, spawn_with_form, wait_for, wait_ready

PASSWORD = "correct-horse-9"


def ledger(hub: Hub) -> Ledger:
    return Ledger(CostDB(f"sqlite:///{hub.state_dir / 'costs.sqlite'}"))


def audit(hub: Hub):
    db = CostDB(f"sqlite:///{hub.state_dir / 'costs.sqlite'}")
    return BudgetStore(db, BudgetPolicy()).audit_log()


def cost(hub: Hub, s: requests.Session, path: str, **kw) -> requests.Response:
    """A request to the cost service with a person's hub session (OAuth hand-off followed)."""
    return s.request(kw.pop("method", "GET"), f"{hub.url}/services/cost/{path}", timeout=30, **kw)


def cost_api(hub: Hub, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
    headers = {"Authorization": f"token {token or hub.api_token()}"}
    return requests.request(method, f"{hub.url}/services/cost/api/{path}", headers=headers, timeout=30, **kw)


def user_token(hub: Hub, user: str) -> str:
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "test", "expires_in": 600})
    r.raise_for_status()
    return r.json()["token"]


def make_user(hub: Hub, name: str) -> requests.Session:
    """Sign up, approved by the admin, and signed in once (only then does the hub know the user)."""
    hub.create_user(name, PASSWORD)
    return hub.session(name, PASSWORD)


def wait_cost_service(hub: Hub):
    wait_for(lambda: cost_api(hub, "GET", "budgets").status_code == 200, timeout=60, what="cost service")


# ---------------------------------------------------------------- spans, pages, access


def test_spawn_and_stop_are_recorded_and_reported(hub):
    hub.create_user("alice", PASSWORD)
    hub.create_user("bob", PASSWORD)
    wait_cost_service(hub)
    s = hub.session("alice", PASSWORD)
    r = spawn_with_form(hub, s, "cpu-small")
    assert r.status_code == 200, r.text[-2000:]
    wait_ready(hub, "alice")
    spans = ledger(hub).open_spans("alice")
    assert [(sp.kind, sp.profile, sp.rate, sp.resource_id) for sp in spans] == [("server", "cpu-small", Decimal("0.1"), "")]
    time.sleep(2)
    assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
    wait_for(lambda: not ledger(hub).open_spans("alice", "server"), timeout=60, what="span closed")
    (closed,) = [sp for sp in ledger(hub).spans(spans[0].start.strftime("%Y-%m"), "alice") if sp.kind == "server"]
    seconds = Decimal((closed.end - closed.start).total_seconds())
    assert seconds >= 2
    assert closed.cost == (seconds * Decimal("0.1") / 3600).quantize(Decimal("0.000001"))

    # alice's own page and API; bob cannot see hers
    page = cost(hub, s, "")
    assert page.status_code == 200 and 'data-user="alice"' in page.text and "cpu-small" in page.text
    assert cost(hub, s, "plot.png").headers["Content-Type"] == "image/png"
    me = cost(hub, s, "api/status").json()
    assert me["user"] == "alice" and me["budget"] == "300.00" and me["level"] == ""
    bob = hub.session("bob", PASSWORD)
    assert cost(hub, bob, "?user=alice").status_code == 403
    assert cost(hub, bob, "admin").status_code == 403
    bob_token = user_token(hub, "bob")
    r = cost_api(hub, "GET", "users/alice/report", token=bob_token)
    assert r.status_code == 403 and r.json()["message"] == "You may only see your own costs."
    assert cost_api(hub, "PUT", "budgets/user/bob", token=bob_token, json={"amount": 1000}).status_code == 403
    assert cost_api(hub, "GET", "users/bob/report", token=bob_token).json()["spent"] == "0.00"

    # the admin sees everyone, as JSON, CSV and a plot
    rows = cost_api(hub, "GET", "report?format=json").json()["users"]
    assert {r["user"] for r in rows} >= {"admin", "alice", "bob"}
    csv = cost_api(hub, "GET", "report?format=csv").text.splitlines()
    assert csv[0] == "user,spent,budget,remaining,percent_used,forecast"
    admin = hub.admin_session()
    assert cost(hub, admin, "admin").status_code == 200
    assert cost(hub, admin, "admin/plot.png").headers["Content-Type"] == "image/png"
    assert "attachment" in cost(hub, admin, "admin/report.csv").headers["Content-Disposition"]


# ---------------------------------------------------------------- API validation


@pytest.mark.parametrize("method,path,body,status,message", [
    ("PUT", "budgets/user/alice", {"amount": -5}, 400, "budget of user 'alice' must be a number >= 0, got -5"),
    ("PUT", "budgets/user/alice", {"amount": "abc"}, 400, "budget of user 'alice' must be a number >= 0, got 'abc'"),
    ("PUT", "budgets/user/alice", {"amount": 12.345}, 400,
     "budget of user 'alice' must be in dollars and cents (at most 2 decimals), got 12.345"),
    ("PUT", "budgets/user/alice", {}, 400, "amount is missing: give an amount in US dollars, e.g. 250"),
    ("PUT", "budgets/user/alice", {"amount": 5, "colour": "red"}, 400,
     "unknown field 'colour' (expected: amount, reason)"),
    ("PUT", "budgets/user/nobody", {"amount": 5}, 400, "unknown user 'nobody'"),
    ("PUT", "budgets/group/nogroup", {"amount": 5}, 400, "unknown group 'nogroup'"),
    ("PUT", "budgets/team/alice", {"amount": 5}, 400, "unknown budget scope 'team' (expected 'user' or 'group')"),
    ("POST", "extensions", {"user": "alice", "amount": 0, "days": 3, "reason": "x"}, 400,
     "extension for user 'alice' must be more than 0, got 0"),
    ("POST", "extensions", {"user": "alice", "amount": 10, "days": 3}, 400,
     "reason is needed for an extension (it goes in the audit log)"),
    ("POST", "extensions", {"user": "alice", "amount": 10, "until": "2020-01-01T00:00:00Z", "reason": "x"}, 400,
     "until must be in the future, got '2020-01-01T00:00:00Z'"),
    ("POST", "extensions", {"user": "alice", "amount": 10, "until": "2999-01-01T00:00:00Z", "reason": "x"}, 400,
     "until must be at most 366 days from now, got '2999-01-01T00:00:00Z'"),
    ("GET", "report?period=2026-13", None, 400, "unknown period '2026-13': month 13 is not 01..12"),
    ("GET", "report?period=last-month", None, 400,
     "unknown period 'last-month' (expected YYYY-MM for a month, e.g. 2026-11, or YYYY-Www for an ISO week, e.g. 2026-W47)"),
    ("GET", "users/nobody/report", None, 400, "unknown user 'nobody'"),
])
def test_bad_api_input_is_refused_and_changes_nothing(hub, method, path, body, status, message):
    make_user(hub, "alice")
    wait_cost_service(hub)
    before = audit(hub)
    kw = {"data": b"not json"} if body == "raw" else ({} if body is None else {"json": body})
    r = cost_api(hub, method, path, **kw)
    assert (r.status_code, r.json()["message"]) == (status, message)
    assert audit(hub) == before


def test_budget_change_and_extension_are_audited(hub):
    make_user(hub, "alice")
    wait_cost_service(hub)
    r = cost_api(hub, "PUT", "budgets/user/alice", json={"amount": "120.50", "reason": "new student"})
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("actor", "action", "old", "new", "reason")} == {
        "actor": "admin", "action": "set", "old": None, "new": "120.50", "reason": "new student"}
    r = cost_api(hub, "PUT", "budgets/group/staff", json={"amount": 500})
    assert r.status_code == 200
    r = cost_api(hub, "POST", "extensions", json={"user": "alice", "amount": 30, "days": 2, "reason": "deadline"})
    assert r.status_code == 201, r.text
    budgets = cost_api(hub, "GET", "budgets").json()
    assert budgets["users"]["alice"] == {"budget": "150.50", "base": "120.50", "source": "user alice (set by an admin)",
                                         "extensions": "30.00"}
    r = cost_api(hub, "DELETE", "budgets/user/alice?reason=back+to+default")
    assert r.json()["old"] == "120.50" and r.json()["new"] is None
    entries = cost_api(hub, "GET", "audit").json()["entries"]
    assert [(e["action"], e["scope"], e["name"], e["old"], e["new"]) for e in entries] == [
        ("set", "user", "alice", None, "120.50"), ("set", "group", "staff", None, "500.00"),
        ("extend", "user", "alice", None, "30.00"), ("clear", "user", "alice", "120.50", None)]
    assert all(e["actor"] == "admin" for e in entries)


# ---------------------------------------------------------------- refusal before a spawn


def test_spawn_refused_when_budget_does_not_cover_the_minimum_block(hub):
    s = make_user(hub, "alice")
    wait_cost_service(hub)
    # "pricey" costs $3600/h and the minimum block here is 0.001 h = $3.60: $2 is not enough
    assert cost_api(hub, "PUT", "budgets/user/alice", json={"amount": 2}).status_code == 200
    s = hub.session("alice", PASSWORD)
    page, _ = spawn_form_xsrf(hub, s)
    assert "<strong>$2.00</strong> left of $2.00" in page
    assert re.search(r'id="profile-pricey" value="pricey"\s+disabled', page)
    assert not re.search(r'id="profile-cpu-small" value="cpu-small"\s+disabled', page)
    message = ("Not enough budget to start &#39;Pricey&#39;: it needs $3.60 for a first block of 0.001 h at "
               "$3,600.00/h, and you have $2.00 left of $2.00 for ")
    assert message in page
    r = spawn_with_form(hub, s, "pricey")
    assert r.status_code == 403
    assert message in r.text
    assert "Choose a profile" in r.text  # the form again, not a failed spawn
    assert server_processes(hub, "alice") == []
    r = hub.api("POST", "/users/alice/server", json={"profile": "pricey"})
    assert r.status_code == 403 and "Not enough budget" in r.json()["message"]
    assert ledger(hub).open_spans("alice") == []


# ---------------------------------------------------------------- enforcement at 80 / 95 / 100 %


@pytest.fixture
def hub_config(hub_config):
    hub_config["costs"]["check_interval_seconds"] = 1
    hub_config["budgets"] = {"minimum_block_hours": 0.001}
    hub_config["profiles"].append(
        # $3600/h = $1 per second, so a $12 budget runs out in about 12 s
        {"slug": "pricey", "display_name": "Pricey", "image": "base", "cpu": 1, "memory": "1G",
         "price_per_hour": 3600})
    return hub_config


def test_running_server_is_warned_then_stopped_at_the_cap(hub):
    s = make_user(hub, "alice")
    wait_cost_service(hub)
    assert cost_api(hub, "PUT", "budgets/user/alice", json={"amount": 12}).status_code == 200
    s = hub.session("alice", PASSWORD)
    assert spawn_with_form(hub, s, "pricey").status_code == 200
    wait_ready(hub, "alice")
    db = CostDB(f"sqlite:///{hub.state_dir / 'costs.sqlite'}")
    period = time.strftime("%Y-%m", time.gmtime())

    def levels():
        return [n.level for n in Notices(db).of("alice", period)]

    wait_for(lambda: "stopped" in levels(), timeout=90, what="budget enforcement to stop alice's server")
    assert levels() == ["80", "95", "stopped"]
    wait_for(lambda: not hub.api("GET", "/users/alice").json()["servers"], timeout=60, what="server stopped")
    assert server_processes(hub, "alice") == []
    home = s.get(f"{hub.url}/hub/home", timeout=30).text
    # spend runs on until the server is stopped: at $1 a second that is a dollar or two past the cap
    assert re.search(r"Your budget is used up: \$1\d\.\d\d of your \$12\.00 budget for 20\d\d-\d\d\. "
                     r"Your running servers were stopped", home)
    # and a new spawn is refused
    r = spawn_with_form(hub, s, "pricey")
    assert r.status_code == 403 and "Not enough budget" in r.text
    # an extension lets alice start again; it is in the audit log
    r = cost_api(hub, "POST", "extensions", json={"user": "alice", "amount": 100, "days": 1, "reason": "deadline"})
    assert r.status_code == 201
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")


# ---------------------------------------------------------------- crash recovery


def cost_service_processes(hub) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"posehub.costservice" in (d / "cmdline").read_bytes() and \
                    str(hub.config_file).encode() in (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def test_hub_killed_and_restarted_keeps_the_span_whole(hub):
    hub.create_user("alice", PASSWORD)
    wait_cost_service(hub)
    s = hub.session("alice", PASSWORD)
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    (span,) = ledger(hub).open_spans("alice", "server")
    pids = server_processes(hub, "alice")
    services = cost_service_processes(hub)
    assert services
    os.killpg(hub.proc.pid, signal.SIGKILL)  # the hub and its proxy die
    hub.proc.wait()
    # the cost service runs in a session of its own: it notices that its hub is gone and exits
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in services), timeout=30,
             what="the orphaned cost service to exit")
    for p in pids:  # ... and the server crashes too, while the hub is down
        if Path(f"/proc/{p}").exists():
            os.kill(p, signal.SIGKILL)
    time.sleep(1)
    hub.start()
    wait_cost_service(hub)
    wait_for(lambda: not ledger(hub).open_spans("alice", "server"), timeout=90, what="crashed span closed")
    spans = [sp for sp in ledger(hub).spans(span.start.strftime("%Y-%m"), "alice") if sp.kind == "server"]
    assert len(spans) == 1 and spans[0].id == span.id  # closed once, not reopened, not counted twice
    assert spans[0].end >= spans[0].start
    # a new server after the restart is a new span that starts after the old one ended
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    spans = [sp for sp in ledger(hub).spans(span.start.strftime("%Y-%m"), "alice") if sp.kind == "server"]
    assert len(spans) == 2 and spans[1].start >= spans[0].end


# ---------------------------------------------------------------- metrics


def test_metrics_in_prometheus_format_with_the_figures_of_the_ledger(hub):
    from datetime import datetime, timedelta, timezone

    from prometheus_client.parser import text_string_to_metric_families

    make_user(hub, "alice")
    bob = make_user(hub, "bob")
    wait_cost_service(hub)
    assert spawn_with_form(hub, bob, "cpu-small").status_code == 200  # running now
    wait_ready(hub, "bob")
    led = ledger(hub)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = max(now - timedelta(hours=10), now.replace(day=1, hour=0, minute=0, second=0))
    hours = Decimal((now - start).total_seconds()) / 3600
    span = led.open_span("alice", "server", "old", "1.5", profile="cpu-staff", start=start)
    led.close_span(span.id, now)
    led.open_span("bob", "dask-worker", "c1/w1", "0.4", profile="cpu-staff")

    r = requests.get(f"{hub.url}/services/cost/metrics", headers={"Authorization": f"token {hub.api_token()}"},
                     timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    period = now.strftime("%Y-%m")
    alice = (("period", period), ("user", "alice"))
    assert samples[("posehub_spend_dollars", alice)] == pytest.approx(float(Decimal("1.5") * hours), abs=0.01)
    budget = float(hub.config.get("budgets", {}).get("default", 300))
    assert samples[("posehub_budget_dollars", alice)] == pytest.approx(budget)
    assert samples[("posehub_budget_used_percent", alice)] == pytest.approx(
        float(Decimal("1.5") * hours) / budget * 100, abs=0.05)
    assert samples[("posehub_running", (("kind", "server"), ("profile", "cpu-small")))] == 1
    assert samples[("posehub_running", (("kind", "dask-worker"), ("profile", "cpu-staff")))] == 1
    assert ("posehub_running", (("kind", "server"), ("profile", "cpu-staff"))) not in samples  # closed
    assert samples[("posehub_budget_stops_total", (("kind", "server"),))] == 0

    # a user's own token may not read everyone's figures
    r = requests.get(f"{hub.url}/services/cost/metrics",
                     headers={"Authorization": f"token {user_token(hub, 'bob')}"}, timeout=30)
    assert r.status_code == 403
