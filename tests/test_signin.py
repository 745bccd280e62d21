"""Sign-in and names, tried for real against a running hub: admin names no one else can claim, one user-name rule
for the sign-up form and the REST API."""

import html
import re

import pytest
import requests

from hubfixture import Hub

pytestmark = pytest.mark.slow
PASSWORD = "correct-horse-9"


def signup_message(hub: Hub, username: str, password: str = PASSWORD) -> str:
    r = hub.signup(username, password)
    r.raise_for_status()
    m = re.search(r'<div class="alert[^"]*"[^>]*>(.*?)</div>', r.text, re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", m.group(1))).split()) if m else r.text


def can_login(hub: Hub, user: str, password: str) -> bool:
    try:
        hub.login(requests.Session(), user, password)
        return True
    except AssertionError:
        return False


@pytest.fixture
def hub_config(hub_config):
    hub_config["admins"] = ["admin", "pi"]
    hub_config["auth"]["local"]["open_signup"] = True  # the harshest case: sign-ups need no approval
    return hub_config


def test_every_admin_name_exists_from_the_first_start(hub):
    m = re.search(r"First start: admin account 'pi', password: (\S+)", hub.log())
    assert m, hub.log()[-3000:]
    assert (hub.state_dir / "admin-password-pi").read_text().strip() == m.group(1)
    assert hub.api("GET", "/users/pi").json()["admin"] is True
    assert can_login(hub, "pi", m.group(1))
    # someone else signing up as pi: the name is taken, and their password does not get in
    assert "this username is already in use" in signup_message(hub, "pi", "attacker-Pass-77")
    assert not can_login(hub, "pi", "attacker-Pass-77")


def test_an_unclaimed_admin_name_waits_for_an_admins_approval(hub):
    assert hub.api("DELETE", "/users/pi").status_code == 204  # pi's account is gone: the name is free again
    msg = signup_message(hub, "pi", "claimer-Pass-77")
    assert msg == "Your information has been sent to the admin."  # not "you can log in now", even with open sign-up
    assert not can_login(hub, "pi", "claimer-Pass-77")
    assert "sign-up for the admin name 'pi': it waits for an existing admin's approval" in hub.log().lower()
    # an ordinary name is let in at once (open sign-up), and is no admin
    assert "The signup was successful" in signup_message(hub, "carol")
    assert can_login(hub, "carol", PASSWORD)
    # an existing admin approves: only then may pi sign in
    hub.admin_session().get(f"{hub.url}/hub/authorize/pi", timeout=10).raise_for_status()
    assert can_login(hub, "pi", "claimer-Pass-77")


@pytest.mark.parametrize("name", ["a*", "*", "al?ce", "${aws:username}", "a..b", "-alice"])
def test_user_names_outside_the_rule_are_refused_by_form_and_api(hub, name):
    msg = signup_message(hub, name)
    assert msg == (f"'{name}' cannot be a user name here: use lower-case letters, digits and . _ @ -, starting with "
                   "a letter or digit, no '..', at most 64 characters.")
    r = hub.api("POST", f"/users/{requests.utils.quote(name, safe='')}")
    assert r.status_code == 400, r.text
    assert name not in {u["name"] for u in hub.api("GET", "/users").json()}


def test_names_within_the_rule_are_taken_lower_cased(hub):
    assert "The signup was successful" in signup_message(hub, "Alice.Smith@Uni.example")
    assert can_login(hub, "alice.smith@uni.example", PASSWORD)
    assert hub.api("POST", "/users/bob-2").status_code == 201
