"""Costs in a real browser: the refusal on the spawn page, a user's cost page, an admin editing a budget."""

from pathlib import Path

import pytest
import requests

from browser import browser, login
from test_cost_service import ledger, make_user, wait_cost_service

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def hub_config(hub_config):
    hub_config["budgets"] = {"users": {"alice": 0.05}}  # less than an hour of cpu-small ($0.10/h)
    return hub_config


def test_refusal_cost_page_and_admin_budget_edit(hub):
    make_user(hub, "alice")
    make_user(hub, "bob")
    wait_cost_service(hub)
    DOCS.mkdir(exist_ok=True)
    with browser() as b:
        # alice's spawn page: the budget and why she cannot start, as a normal page
        page = b.new_page(viewport={"width": 1100, "height": 800})
        login(page, hub.url, "alice", "correct-horse-9")
        assert page.url.endswith("/hub/spawn")
        assert page.locator("#posehub-budget").inner_text().startswith("Budget for ")
        assert "$0.05 left of $0.05" in page.locator("#posehub-budget").inner_text()
        assert page.locator("#profile-cpu-small").is_disabled()
        reason = page.locator("[data-profile=cpu-small] .posehub-unavailable").inner_text()
        assert reason.startswith("Not enough budget to start 'Small CPU': it needs $0.10 for a first block of 1 h")
        page.screenshot(path=str(DOCS / "cost-refusal.png"), full_page=True)

        # her cost page, reached through the hub's OAuth
        page.goto(f"{hub.url}/services/cost/")
        page.wait_for_selector("#user-report")
        assert page.locator("h1").inner_text().startswith("Costs of alice in ")
        assert page.locator("#admin-link").count() == 0
        # in the hub's look: its navigation bar (logo, Home, Token, Logout), no link to the hub's admin page
        nav = page.locator("#posehub-navbar")
        assert nav.locator("img.jpy-logo").count() == 1
        assert [nav.locator(f"a.nav-link:has-text('{t}')").count() for t in ("Home", "Token", "My costs", "Admin")] \
            == [1, 1, 1, 0]
        assert nav.locator("#logout").is_visible() and "alice" in nav.locator("#login_widget").inner_text()
        # nothing spent yet: said in a sentence, no column of $0.00
        assert page.locator(".no-spend").inner_text() == f"Nothing spent in {page.locator('input[name=period]').input_value()} yet."
        assert page.locator("table.by-day").count() == 0
        page.wait_for_function("(i => i.complete && i.naturalWidth > 0)(document.querySelector('#user-plot'))")
        page.screenshot(path=str(DOCS / "cost-user.png"), full_page=True)
        page.goto(f"{hub.url}/services/cost/admin")
        assert "Only admins" in page.locator("#error-message").inner_text()
        page.close()

        # the admin raises alice's budget in the admin page; a bad value first changes nothing
        page = b.new_page(viewport={"width": 1300, "height": 900})
        login(page, hub.url, "admin", hub.admin_password)
        page.goto(f"{hub.url}/services/cost/admin")
        assert page.locator("#posehub-navbar a.nav-link[href$='/hub/admin']").count() == 1  # the hub admin's link
        assert page.locator("#admin-link").inner_text() == "Lab admin"
        row = page.locator("tr[data-user=alice]")
        row.locator("input[name=amount]").fill("-3")
        row.locator("button[value=set]").click()
        page.wait_for_selector("#form-error")
        assert page.locator("#form-error").inner_text() == (
            "Nothing was changed: budget of user 'alice' must be a number >= 0, got '-3'")
        row = page.locator("tr[data-user=alice]")
        assert row.locator("td").nth(2).inner_text() == "0.05"
        row.locator("input[name=amount]").fill("25")
        row.locator("input[name=reason]").fill("thesis chapter")
        row.locator("button[value=set]").click()
        page.wait_for_selector("#form-saved")
        row = page.locator("tr[data-user=alice]")
        assert row.locator("td").nth(2).inner_text() == "25.00"
        audit = page.locator("#audit-table tbody tr").first.inner_text()
        assert "admin" in audit and "user alice" in audit and "0.05" in audit and "25.00" in audit
        assert "thesis chapter" in audit
        # sortable: click "user" twice -> descending by name
        page.click("#admin-table th:has-text('user')")
        page.click("#admin-table th:has-text('user')")
        names = page.locator("#admin-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.user)")
        assert names == sorted(names, reverse=True)
        page.wait_for_function("(i => i.complete && i.naturalWidth > 0)(document.querySelector('#admin-plot'))")
        page.screenshot(path=str(DOCS / "cost-admin.png"), full_page=True)
        csv = requests.get(page.locator("#csv-link").get_attribute("href").replace("/services", f"{hub.url}/services"),
                           cookies={c["name"]: c["value"] for c in page.context.cookies()}, timeout=30)
        assert csv.text.startswith("user,spent,budget,remaining,percent_used,forecast")
        page.close()

        # alice may start now
        page = b.new_page(viewport={"width": 1100, "height": 800})
        login(page, hub.url, "alice", "correct-horse-9")
        assert not page.locator("#profile-cpu-small").is_disabled()
        page.check("#profile-cpu-small")
        page.click("button[type=submit]")
        page.wait_for_url("**/user/alice/lab**", timeout=120_000)
        assert [s.profile for s in ledger(hub).open_spans("alice", "server")] == ["cpu-small"]


def test_budget_warning_shows_inside_jupyterlab(hub_config, tmp_path):
    """At 80 % of the budget, JupyterLab shows the warning as a notification."""
    from datetime import datetime, timedelta, timezone

    import copy

    from cost_reports.db import CostDB
    from cost_reports.ledger import Ledger
    from hubfixture import Hub

    cfg = copy.deepcopy(hub_config)
    cfg["budgets"] = {"users": {"alice": 10}}
    cfg["costs"]["check_interval_seconds"] = 1
    # $8.50 already spent this month (an earlier hour at $8.50/h): 85 % of $10
    state = Path(cfg["hub"]["state_dir"])
    state.mkdir(parents=True)
    db = CostDB(f"sqlite:///{state / 'costs.sqlite'}")
    db.create_all()
    now = datetime.now(timezone.utc)
    start = max(now - timedelta(hours=2), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    span = Ledger(db).open_span("alice", "server", "", "8.5", profile="cpu-small", start=start)
    Ledger(db).close_span(span.id, start + timedelta(hours=1))
    hub = Hub(cfg, tmp_path).start()
    try:
        make_user(hub, "alice")
        wait_cost_service(hub)
        with browser() as b:
            page = b.new_page(viewport={"width": 1200, "height": 800})
            login(page, hub.url, "alice", "correct-horse-9")
            home = page.goto(f"{hub.url}/hub/home")
            assert home.status == 200
            page.wait_for_selector("#posehub-budget-warning")
            assert page.locator("#posehub-budget-warning").inner_text().startswith(
                "You have used 80 % of your budget: $8.50 of your $10.00 budget for ")
            page.goto(f"{hub.url}/hub/spawn")
            page.check("#profile-cpu-small")
            page.click("button[type=submit]")
            page.wait_for_url("**/user/alice/lab**", timeout=120_000)
            page.wait_for_selector(".jp-LabShell", timeout=120_000)
            page.wait_for_function("document.body.dataset.posehubBudgetLevel === '80'", timeout=60_000)
            toast = page.get_by_text("You have used 80 % of your budget")
            toast.first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)  # let the notification finish sliding in
            assert page.get_by_text("official Jupyter news").count() == 0  # no prompt about a feed offline
            page.screenshot(path=str(DOCS / "jupyterlab-budget-warning.png"))
    finally:
        hub.stop()
