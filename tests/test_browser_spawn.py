"""A person's path in a real browser: log in, pick an allowed profile, land in JupyterLab."""

from pathlib import Path

import pytest

from browser import browser, login
from hubfixture import server_processes

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def hub_config(hub_config):
    hub_config["images"]["tracking"] = {"description": "multi-animal tracking, not built on this machine"}
    hub_config["gpus"] = {"devices": []}
    hub_config["profiles"] = [
        {"slug": "cpu-small", "display_name": "Small CPU", "image": "base", "cpu": 2, "memory": "4G",
         "price_per_hour": 0.10, "description": "For notebooks, labelling and looking at results."},
        {"slug": "cpu-large", "display_name": "Large CPU", "image": "base", "cpu": 8, "memory": "8G",
         "price_per_hour": 0.40, "allowed_groups": ["staff"],
         "description": "For preprocessing video and small training runs."},
        {"slug": "gpu", "display_name": "One GPU", "image": "base", "cpu": 8, "memory": "8G", "gpus": 1,
         "price_per_hour": 1.21, "allowed_groups": ["staff"], "description": "For training pose models."},
        {"slug": "tracking", "display_name": "Multi-animal tracking", "image": "tracking", "cpu": 8,
         "memory": "8G", "price_per_hour": 0.40, "allowed_users": ["sam"],
         "description": "A lab's own image, not built on this machine yet."},
        {"slug": "cpu-huge", "display_name": "Huge memory", "image": "base", "cpu": 2, "memory": "1024G",
         "price_per_hour": 2.0, "allowed_users": ["sam"], "description": "For a machine with 1 TiB of memory."},
    ]
    return hub_config


def test_login_pick_profile_reach_jupyterlab(hub):
    hub.create_user("alice", "correct-horse-9")
    hub.create_user("sam", "correct-horse-9")  # in group staff
    with browser() as b:
        # alice may use one profile only
        page = b.new_page(viewport={"width": 1100, "height": 900})
        login(page, hub.url, "alice", "correct-horse-9")
        assert page.url.endswith("/hub/spawn")
        offered = page.locator("[data-profile]").evaluate_all("els => els.map(e => e.dataset.profile)")
        assert offered == ["cpu-small"]
        page.close()

        # sam sees the staff profiles too; unavailable ones say why
        page = b.new_page(viewport={"width": 1100, "height": 1000})
        login(page, hub.url, "sam", "correct-horse-9")
        offered = page.locator("[data-profile]").evaluate_all("els => els.map(e => e.dataset.profile)")
        assert offered == ["cpu-small", "cpu-large", "gpu", "tracking", "cpu-huge"]
        assert page.locator("#profile-gpu").is_disabled()
        assert "this machine has no GPU" in page.locator("[data-profile=gpu]").inner_text()
        assert "make env IMAGE=tracking" in page.locator("[data-profile=tracking]").inner_text()
        assert page.locator("#profile-cpu-huge").is_disabled()  # memory the machine does not have
        assert "The profile asks for 1024 GiB of memory; this machine has" in \
            page.locator("[data-profile=cpu-huge]").inner_text()
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / "spawn-page.png"), full_page=True)

        page.check("#profile-cpu-large")
        page.click("button[type=submit]")
        page.wait_for_url("**/user/sam/lab**", timeout=120_000)
        page.wait_for_selector(".jp-LabShell", timeout=120_000)
        page.wait_for_selector(".jp-Launcher", timeout=120_000)
        assert "JupyterLab" in page.title()
        page.screenshot(path=str(DOCS / "jupyterlab.png"))
        assert len(server_processes(hub, "sam")) == 1
