"""Headless Chromium (Debian's package) driven by Playwright, as the guide asks."""

from __future__ import annotations

import contextlib
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
        "--no-first-run", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def browser():
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM):
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium package (needs root)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def login(page, hub_url: str, username: str, password: str):
    page.goto(f"{hub_url}/hub/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_load_state("networkidle")
