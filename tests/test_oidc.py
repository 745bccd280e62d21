"""Single sign-on end to end: a real OpenID Connect provider on loopback (the npm package
oidc-provider, tests/oidc/provider.mjs), a real hub, headless Chromium.

Accounts of the provider: alice (group lab), bob (group staff), eve (group visitors, not allowed),
nogroups (no groups claim), noname (no preferred_username claim), mallory (preferred_username "bob",
an unverified e-mail). User names come from the stable `sub` claim here (the account's id)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

from browser import browser
from hubfixture import REPO, free_port, process_env, server_processes, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]
DOCS = REPO / "docs"
INSTITUTION = "Example University"
ACCOUNTS = {
    "alice": {"preferred_username": "alice", "name": "Alice", "groups": ["lab"], "email": "alice@uni.example",
              "email_verified": True},
    # picks the name of an admin at the provider: the hub names people by a stable claim (here sub), not this
    "mallory": {"preferred_username": "bob", "groups": ["lab"], "email": "mallory@uni.example",
                "email_verified": False},
    "bob": {"preferred_username": "bob", "name": "Bob", "groups": ["staff", "lab"]},
    "eve": {"preferred_username": "eve", "groups": ["visitors"]},
    "nogroups": {"preferred_username": "nogroups"},
    "noname": {"name": "No Name", "groups": ["lab"]},
}


class OIDCProvider:
    def __init__(self, workdir: Path, redirect_uri: str):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.settings = workdir / "oidc-settings.json"
        self.data = {
            "port": self.port, "issuer": self.issuer, "accounts": json.loads(json.dumps(ACCOUNTS)),
            "clients": [{"client_id": "posehub", "client_secret": "posehub-test-secret",
                         "redirect_uris": [redirect_uri]}],
        }
        self.settings.write_text(json.dumps(self.data))
        self.log = workdir / "oidc-provider.log"
        self.proc = None

    def set_claims(self, account: str, **claims):
        """Change an account's claims at the provider (it reads them again at each request)."""
        self.data["accounts"][account].update(claims)
        self.settings.write_text(json.dumps(self.data))

    def start(self):
        self.proc = subprocess.Popen(["node", str(REPO / "tests" / "oidc" / "provider.mjs"), str(self.settings)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(lambda: requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok,
                 timeout=30, what="oidc-provider")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def provider(hub_config, tmp_path):
    callback = f"http://127.0.0.1:{hub_config['hub']['port']}/hub/oauth_callback"
    p = OIDCProvider(tmp_path, callback).start()
    yield p
    p.stop()


@pytest.fixture
def hub_config(hub_config, tmp_path, request):
    # the provider's port must be known before the hub's config is written: reserve it here
    secret = tmp_path / "client-secret"
    secret.write_text("posehub-test-secret\n")
    hub_config["auth"] = {"type": "oidc", "oidc": {
        "institution_name": INSTITUTION, "issuer_url": "http://placeholder", "client_id": "posehub",
        "client_secret_file": str(secret), "allowed_groups": ["lab", "staff"], "admin_groups": ["staff"],
        "scopes": ["openid", "profile", "email", "groups"], "timeout_seconds": 3,
        "username_claim": "sub", "refresh_seconds": 2,
    }}
    hub_config["budgets"] = {"default": 300, "groups": {"staff": 500}}
    hub_config["groups"] = {}
    return hub_config


@pytest.fixture
def hub(request, hub_config, provider, tmp_path):
    import copy

    from hubfixture import Hub

    cfg = copy.deepcopy(hub_config)
    cfg["auth"]["oidc"]["issuer_url"] = provider.issuer
    h = Hub(cfg, tmp_path).start()
    yield h
    h.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(f"\n----- hub log -----\n{h.log()[-20000:]}\n----- provider log -----\n{provider.log.read_text()[-5000:]}")


def sign_in(page, hub, who: str):
    page.goto(f"{hub.url}/hub/login")
    button = page.get_by_text(f"Sign in with {INSTITUTION}")
    button.click()
    page.wait_for_selector("input[name=login]", timeout=20000)
    page.fill("input[name=login]", who)
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def test_login_page_has_one_button_with_the_institution(hub):
    r = requests.get(f"{hub.url}/hub/login", timeout=10)
    assert r.status_code == 200
    assert f"Sign in with {INSTITUTION}" in r.text
    assert 'name="password"' not in r.text  # no local accounts form


def test_users_sign_in_and_get_their_groups_profiles_and_budget(hub):
    with browser() as b:
        alice = b.new_context().new_page()
        alice.goto(f"{hub.url}/hub/login")
        alice.screenshot(path=str(DOCS / "oidc-login.png"), full_page=True)
        sign_in(alice, hub, "alice")
        alice.goto(f"{hub.url}/hub/spawn")
        text = alice.content()
        assert re.findall(r'data-profile="([^"]+)"', text) == ["cpu-small"]
        assert "$300.00" in text
        alice.screenshot(path=str(DOCS / "oidc-spawn-alice.png"), full_page=True)

        bob = b.new_context().new_page()
        sign_in(bob, hub, "bob")
        bob.goto(f"{hub.url}/hub/spawn")
        text = bob.content()
        assert re.findall(r'data-profile="([^"]+)"', text) == ["cpu-small", "cpu-staff"]
        assert "$500.00" in text  # the staff group's budget
        # bob is an admin through admin_groups
        assert bob.goto(f"{hub.url}/hub/admin").status == 200

        # the default: the tokens stay with the hub, the server does not get them
        alice.goto(f"{hub.url}/hub/spawn")
        alice.click("input[type=submit], button[type=submit]")
        alice.wait_for_url("**/user/alice/lab**", timeout=120_000)
        (pid,) = server_processes(hub, "alice")
        env = process_env(pid)
        assert not any(k.startswith("OIDC_") for k in env)
        assert not any("access_token" in v or v.startswith("ey") for v in env.values())


def test_a_user_of_no_allowed_group_is_refused_with_the_admin_contact(hub):
    with browser() as b:
        page = b.new_context().new_page()
        sign_in(page, hub, "eve")
        text = page.content()
        assert "403" in text
        assert f"Your {INSTITUTION} account is not in a group allowed to use PoseHub" in text
        assert "help@lab.example" in text
        page.screenshot(path=str(DOCS / "oidc-refused.png"), full_page=True)


@pytest.mark.parametrize("who, claim, setting", [("nogroups", "groups", "auth.oidc.groups_claim")])
def test_a_missing_claim_is_an_error_naming_it(hub, who, claim, setting):
    with browser() as b:
        page = b.new_context().new_page()
        sign_in(page, hub, who)
        text = page.content()
        assert f"did not send the '{claim}' claim" in text and setting in text
        assert "Traceback" not in text


def test_provider_down_gives_an_error_page_and_signed_in_users_keep_working(hub, provider):
    with browser() as b:
        alice = b.new_context().new_page()
        sign_in(alice, hub, "alice")
        assert "/hub/login" not in alice.url
        provider.stop()
        # a new visitor gets PoseHub's page, not the browser's "connection refused"
        page = b.new_context().new_page()
        page.goto(f"{hub.url}/hub/login")
        page.get_by_text(f"Sign in with {INSTITUTION}").click()
        page.wait_for_load_state("networkidle")
        text = page.content()
        assert "503" in text and f"Signing in with {INSTITUTION} is not possible right now" in text
        page.screenshot(path=str(DOCS / "oidc-provider-down.png"), full_page=True)
        # alice is still signed in and the hub serves her
        resp = alice.goto(f"{hub.url}/hub/spawn")
        assert resp.status == 200 and "data-profile" in alice.content()


def hub_users(hub) -> dict[str, bool]:
    """{name: admin} from the hub's database (single sign-on hubs have no admin password for the API)."""
    import sqlite3

    with sqlite3.connect(hub.state_dir / "jupyterhub.sqlite") as db:
        return {name: bool(admin) for name, admin in db.execute("SELECT name, admin FROM users")}


def test_a_chosen_preferred_username_does_not_make_anyone_someone_else(hub):
    """mallory's provider account says preferred_username "bob" (bob is an admin here): she signs in as mallory,
    the name from the stable claim, and is no admin."""
    with browser() as b:
        page = b.new_context().new_page()
        sign_in(page, hub, "mallory")
        assert "/hub/login" not in page.url
    users = hub_users(hub)
    assert "mallory" in users and not users["mallory"]
    assert "bob" not in users  # bob never signed in


def test_a_change_at_the_provider_takes_effect_within_the_refresh_age(hub, provider):
    """refresh_seconds is 2 here: bob loses admin when he leaves the admin group, and his access when he leaves
    the allowed groups, without signing out."""
    with browser() as b:
        bob = b.new_context().new_page()
        sign_in(bob, hub, "bob")
        assert bob.goto(f"{hub.url}/hub/admin").status == 200
        provider.set_claims("bob", groups=["lab"])  # still allowed, no longer staff (the admin group)
        wait_for(lambda: bob.goto(f"{hub.url}/hub/admin").status == 403, timeout=30, interval=1,
                 what="bob's admin rights to go")
        assert hub_users(hub)["bob"] is False
        provider.set_claims("bob", groups=["visitors"])  # not allowed any more
        wait_for(lambda: "/hub/login" in (bob.goto(f"{hub.url}/hub/home") and bob.url), timeout=30, interval=1,
                 what="bob to be sent to sign in again")
        bob.goto(f"{hub.url}/hub/login")  # signing in again (the provider remembers him: no password asked) ...
        bob.get_by_text(f"Sign in with {INSTITUTION}").click()
        bob.wait_for_load_state("networkidle")
        assert f"Your {INSTITUTION} account is not in a group allowed to use PoseHub" in bob.content()  # ... refused


def test_names_from_email_only_when_the_provider_verified_it(hub_config, provider, tmp_path):
    import copy

    from hubfixture import Hub

    cfg = copy.deepcopy(hub_config)
    cfg["auth"]["oidc"].update(issuer_url=provider.issuer, username_claim="email")
    (tmp_path / "email-hub").mkdir()
    h = Hub(cfg, tmp_path / "email-hub").start()
    try:
        with browser() as b:
            alice = b.new_context().new_page()
            sign_in(alice, h, "alice")
            assert "/hub/login" not in alice.url
            page = b.new_context().new_page()
            sign_in(page, h, "mallory")  # e-mail not verified
            text = page.content()
            assert "403" in text and f"Your e-mail address at {INSTITUTION} is not verified" in text
            page = b.new_context().new_page()
            sign_in(page, h, "noname")  # sends no e-mail at all
            assert "did not send the 'email' claim" in page.content() and "auth.oidc.username_claim" in page.content()
        names = set(hub_users(h))
        assert "alice@uni.example" in names and not any(n.startswith("mallory") for n in names)
    finally:
        h.stop()
