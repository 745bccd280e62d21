"""Single sign-on configuration, without servers: presets, the client secret, the discovery
document, config errors, and tokens handed to the server only when asked."""

from __future__ import annotations

import asyncio
import subprocess
from types import SimpleNamespace

import pytest
import yaml

from hubfixture import POSEHUB
from posehub.hub import oidc
from posehub.config import DEFAULT_CONFIG, ConfigError, validate
from posehub.hub.hubapply import apply_auth, apply_groups


def raw_config(**oidc_block) -> dict:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["auth"] = {"type": "oidc", "oidc": {"institution_name": "Example University",
                                            "issuer_url": "https://login.example.edu/realms/lab/",
                                            "client_id": "posehub", "client_secret_env": "POSEHUB_OIDC_SECRET",
                                            **oidc_block}}
    return raw


@pytest.mark.parametrize("preset, scopes, username, groups", [
    ("generic", ["openid", "profile", "email"], "email", "groups"),
    ("okta", ["openid", "profile", "email", "groups"], "email", "groups"),
    ("entra", ["openid", "profile", "email"], "oid", "groups"),
    ("google", ["openid", "profile", "email"], "email", ""),
    ("cilogon", ["openid", "profile", "email", "org.cilogon.userinfo"], "eppn", "isMemberOf"),
    ("keycloak", ["openid", "profile", "email"], "email", "groups"),
])
def test_presets_fill_the_defaults(preset, scopes, username, groups):
    lab = {"allowed_groups": ["pose-lab"]}  # (the public presets need one)
    s = oidc.settings(validate(raw_config(preset=preset, **lab)))
    assert (s["scopes"], s["username_claim"], s["groups_claim"]) == (scopes, username, groups)
    assert s["issuer_url"] == "https://login.example.edu/realms/lab"
    assert s["callback_url"] == "http://127.0.0.1:8000/hub/oauth_callback"
    s = oidc.settings(validate(raw_config(preset=preset, username_claim="sub", scopes=["openid"], **lab)))
    assert (s["scopes"], s["username_claim"]) == (["openid"], "sub")


def test_apply_sets_generic_oauthenticator_and_no_local_groups(monkeypatch):
    from traitlets.config import Config

    monkeypatch.setenv("POSEHUB_OIDC_SECRET", "s3cret")
    cfg = validate(raw_config(allowed_groups=["lab"], admin_groups=["pi"]))
    c = Config()
    apply_auth(c, cfg)
    apply_groups(c, cfg)
    a = c.PoseHubOIDCAuthenticator
    assert c.JupyterHub.authenticator_class == "posehub.hub.oidc.PoseHubOIDCAuthenticator"
    assert (a.client_secret, a.login_service, a.auth_state_groups_key) == ("s3cret", "Example University",
                                                                           "oauth_user.groups")
    assert a.manage_groups and a.allowed_groups == {"lab"} and a.admin_groups == {"pi"} and not a.allow_all
    assert a.admin_users == set()  # admins only through admin_groups: `admins` names are not the provider's to give
    assert a.username_pattern.startswith("^")
    assert a.refresh_pre_spawn is True and a.auth_refresh_age == 3600 and a.pass_tokens_to_server is False
    assert c.JupyterHub.cookie_max_age_days == 1
    assert "load_groups" not in c.JupyterHub  # the provider's groups claim decides membership
    assert "Ask the lab's PoseHub admin for access" in a.custom_403_message


def test_client_secret_comes_from_a_file_or_the_environment(tmp_path):
    cfg = validate(raw_config())
    assert oidc.client_secret(cfg, {"POSEHUB_OIDC_SECRET": "x"}) == "x"
    with pytest.raises(ValueError, match="the hub's environment has no POSEHUB_OIDC_SECRET"):
        oidc.client_secret(cfg, {})
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    cfg = validate(raw_config(client_secret_env="", client_secret_file=str(f)))
    assert oidc.client_secret(cfg) == "from-file"
    f.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        oidc.client_secret(cfg)


@pytest.mark.parametrize("change, message", [
    ({"client_secret_env": ""}, "auth.oidc: the client secret is missing"),
    ({"client_secret_file": "/x"}, "auth.oidc: give client_secret_file or client_secret_env, not both"),
    ({"issuer_url": "login.example.edu"}, "auth.oidc.issuer_url"),
    ({"preset": "facebook"}, "auth.oidc.preset"),
    ({"client_secret": "inline"}, "auth.oidc"),  # the secret itself is not a key of this file
])
def test_bad_oidc_config_is_one_clear_message(change, message):
    with pytest.raises(ConfigError) as e:
        validate(raw_config(**change), "posehub.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_oidc_without_its_block_or_with_local_group_members_is_refused():
    raw = raw_config()
    del raw["auth"]["oidc"]
    with pytest.raises(ConfigError, match="auth: type 'oidc' needs an auth.oidc block"):
        validate(raw)
    raw = raw_config()
    raw["groups"] = {"staff": {"users": ["sam"]}}
    with pytest.raises(ConfigError, match="groups.staff.users: with single sign-on"):
        validate(raw)


def test_the_hub_does_not_start_without_its_client_secret(tmp_path):
    raw = raw_config()
    raw["hub"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "posehub.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in __import__("os").environ.items() if k != "POSEHUB_OIDC_SECRET"}
    r = subprocess.run([str(POSEHUB), "up", "--config", str(path)], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("PoseHub cannot start: auth.oidc.client_secret_env: the hub's environment has "
                                "no POSEHUB_OIDC_SECRET")


def test_discovery_document_checks():
    doc = {"issuer": "https://idp/x", "authorization_endpoint": "https://idp/a", "token_endpoint": "https://idp/t",
           "userinfo_endpoint": "https://idp/u"}
    assert oidc.endpoints(doc, "https://idp/x") == {"authorize_url": "https://idp/a", "token_url": "https://idp/t",
                                                    "userdata_url": "https://idp/u"}
    with pytest.raises(ValueError, match="is for issuer 'https://idp/x', not 'https://other'"):
        oidc.endpoints(doc, "https://other")
    with pytest.raises(ValueError, match="has no userinfo_endpoint"):
        oidc.endpoints({**doc, "userinfo_endpoint": ""}, "https://idp/x")


@pytest.mark.parametrize("passing", [False, True])
def test_tokens_reach_the_server_only_when_the_config_asks(passing):
    auth = oidc.PoseHubOIDCAuthenticator(pass_tokens_to_server=passing)
    state = {"access_token": "at-123", "id_token": "id-456", "refresh_token": "rt"}

    async def get_auth_state():
        return state

    user = SimpleNamespace(name="alice", get_auth_state=get_auth_state)
    spawner = SimpleNamespace(environment={"KEEP": "1"})
    asyncio.run(auth.pre_spawn_start(user, spawner))
    expected = {"KEEP": "1"}
    if passing:
        expected |= {"OIDC_ACCESS_TOKEN": "at-123", "OIDC_ID_TOKEN": "id-456"}
    assert spawner.environment == expected
    assert "rt" not in spawner.environment.values()


@pytest.mark.parametrize("change, message", [
    ({"username_claim": "preferred_username"},
     "auth.oidc.username_claim: 'preferred_username' is neither unique nor stable (the provider may let people "
     "choose or change it), so someone could sign in as someone else: use sub, email (taken only when verified) or "
     "your provider's own user ID"),
    ({"preset": "google"},
     "auth.oidc.allowed_groups: with the 'google' preset an empty list lets anyone with an account there sign in "
     "and spend the default budget: name the groups allowed (with groups_claim: hd and your domain)"),
    ({"preset": "cilogon"},
     "auth.oidc.allowed_groups: with the 'cilogon' preset an empty list lets anyone with an account there sign in "
     "and spend the default budget: name the groups allowed"),
])
def test_unsafe_sign_in_settings_are_refused(change, message):
    from posehub.config import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(raw_config(**change))
    assert str(err.value).endswith(message)


def test_presets_name_people_by_stable_claims():
    assert {p: oidc.PRESETS[p][1] for p in oidc.PRESETS} == {
        "generic": "email", "keycloak": "email", "okta": "email", "entra": "oid", "google": "email", "cilogon": "eppn"}
