"""Institutional single sign-on: OpenID Connect through OAuthenticator's GenericOAuthenticator.

:func:`settings` (pure) resolves ``auth.oidc`` with its preset's defaults;
:class:`PoseHubOIDCAuthenticator` adds to GenericOAuthenticator only what it
lacks: endpoints found from the issuer's discovery document (fetched each time
someone signs in, so a provider that is down gives a page saying so and never
stops the hub), errors that name the missing claim, a refusal page with the
admin contact, and handing tokens to the server only when the config asks.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Bool, Float, Unicode

from ..config import PoseHubConfig

from .oidc_policy import PRESETS


class SignInError(web.HTTPError):
    """A sign-in that cannot go on; the message is shown on the error page as is."""

    def __init__(self, status: int, message: str):
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.jupyterhub_message = message


def settings(cfg: PoseHubConfig) -> dict:
    """``auth.oidc`` with the preset's defaults filled in (pure)."""
    o = cfg["auth"]["oidc"]
    scopes, username_claim, groups_claim = PRESETS[o["preset"]]
    return {
        "institution_name": o["institution_name"],
        "issuer_url": o["issuer_url"].rstrip("/"),
        "client_id": o["client_id"],
        "scopes": list(o["scopes"]) or scopes,
        "username_claim": o["username_claim"] or username_claim,
        "groups_claim": o["groups_claim"] or groups_claim,
        "allowed_groups": set(o["allowed_groups"]),
        "admin_groups": set(o["admin_groups"]),
        "callback_url": o["callback_url"] or f"{cfg.public_url}/hub/oauth_callback",
        "pass_tokens_to_server": o["pass_tokens_to_server"],
        "timeout_seconds": float(o["timeout_seconds"]),
        "refresh_seconds": int(o["refresh_seconds"]),
    }


def client_secret(cfg: PoseHubConfig, environ=os.environ) -> str:
    """The client secret from its file or environment variable; a ValueError says what is missing."""
    o = cfg["auth"]["oidc"]
    if o["client_secret_file"]:
        path = cfg.resolve(o["client_secret_file"])
        try:
            secret = Path(path).read_text().strip()
        except OSError as e:
            raise ValueError(f"auth.oidc.client_secret_file: cannot read {path} ({e.strerror})") from None
        if not secret:
            raise ValueError(f"auth.oidc.client_secret_file: {path} is empty")
        return secret
    secret = environ.get(o["client_secret_env"], "")
    if not secret:
        raise ValueError(f"auth.oidc.client_secret_env: the hub's environment has no {o['client_secret_env']}")
    return secret


def endpoints(doc: dict, issuer: str) -> dict:
    """authorize/token/userinfo URLs from a discovery document (pure); ValueError when unusable."""
    if doc.get("issuer", "").rstrip("/") != issuer:
        raise ValueError(f"the discovery document is for issuer {doc.get('issuer')!r}, not {issuer!r}")
    missing = [k for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint") if not doc.get(k)]
    if missing:
        raise ValueError(f"the discovery document has no {', '.join(missing)}")
    return {"authorize_url": doc["authorization_endpoint"], "token_url": doc["token_endpoint"],
            "userdata_url": doc["userinfo_endpoint"]}


class OIDCLoginHandler(OAuthLoginHandler):
    """Finds the provider's endpoints before redirecting there; a provider that does not answer
    gets a PoseHub error page instead of the browser's own."""

    async def get(self):
        await self.authenticator.discover()
        return super().get()


class PoseHubOIDCAuthenticator(GenericOAuthenticator):
    issuer_url = Unicode("", config=True, help="OpenID Connect issuer; endpoints come from its discovery document.")
    institution_name = Unicode("your institution", config=True, help="Name on the sign-in button.")
    admin_contact = Unicode("the PoseHub admin", config=True, help="Who to ask for access (shown on refusals).")
    discovery_timeout = Float(5.0, config=True, help="Seconds to wait for the provider.")
    pass_tokens_to_server = Bool(False, config=True, help="Put the user's tokens in their server's environment.")

    login_handler = OIDCLoginHandler

    # ------------------------------------------------------------ the provider

    def _unavailable(self, why: str) -> SignInError:
        self.log.error("OpenID Connect provider %s: %s", self.issuer_url, why)
        return SignInError(503, f"Signing in with {self.institution_name} is not possible right now: its sign-in "
                                f"service ({self.issuer_url}) does not answer. Please try again in a few minutes; "
                                f"if it goes on, tell {self.admin_contact}. People already signed in are not affected.")

    async def discover(self) -> None:
        """Fetch the discovery document at every sign-in: one small request, and the surest sign
        that the provider answers before the browser is sent there."""
        url = f"{self.issuer_url}/.well-known/openid-configuration"
        try:
            resp = await AsyncHTTPClient().fetch(HTTPRequest(url, connect_timeout=self.discovery_timeout,
                                                             request_timeout=self.discovery_timeout))
            found = endpoints(json.loads(resp.body), self.issuer_url)
        except (OSError, HTTPClientError) as e:
            raise self._unavailable(f"discovery at {url} failed: {e}") from None
        except ValueError as e:
            raise SignInError(502, f"{self.institution_name}'s sign-in service at {self.issuer_url} is not "
                                   f"set up as PoseHub expects: {e}. Tell {self.admin_contact}.") from None
        self.authorize_url, self.token_url, self.userdata_url = (
            found["authorize_url"], found["token_url"], found["userdata_url"])

    async def httpfetch(self, url, *args, **kwargs):
        try:
            return await super().httpfetch(url, *args, **kwargs)
        except OSError as e:
            raise self._unavailable(f"{url}: {e}") from None
        except HTTPClientError as e:
            if e.code == 599:
                raise self._unavailable(f"{url}: {e}") from None
            raise

    # ------------------------------------------------------------ claims

    def _claims_hint(self, user_info: dict) -> str:
        return ", ".join(sorted(user_info)) or "none"

    def user_info_to_username(self, user_info):
        claim = self.username_claim
        if claim == "email" and user_info.get("email") and user_info.get("email_verified") is not True:
            raise SignInError(403, f"Your e-mail address at {self.institution_name} is not verified, and PoseHub "
                                   f"names people by it: verify it with {self.institution_name}, then sign in again. "
                                   f"If it goes on, tell {self.admin_contact}.")
        if not isinstance(claim, str) or user_info.get(claim):
            return super().user_info_to_username(user_info)
        raise SignInError(500, f"{self.institution_name} did not send the '{claim}' claim that PoseHub takes "
                               f"usernames from (auth.oidc.username_claim). Claims received: "
                               f"{self._claims_hint(user_info)}. Tell {self.admin_contact}.")

    async def get_user_groups(self, auth_state: dict):
        key = self.auth_state_groups_key
        if isinstance(key, str) and key.startswith("oauth_user."):
            claim = key.split(".", 1)[1]
            user_info = auth_state.get("oauth_user") or {}
            if claim not in user_info:
                raise SignInError(500, f"{self.institution_name} did not send the '{claim}' claim that PoseHub "
                                       f"takes groups from (auth.oidc.groups_claim). Claims received: "
                                       f"{self._claims_hint(user_info)}. Tell {self.admin_contact}.")
            groups = user_info[claim]
            if isinstance(groups, str):
                groups = [groups]
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise SignInError(500, f"the '{claim}' claim from {self.institution_name} is not a list of "
                                       f"group names: {groups!r}. Tell {self.admin_contact}.")
            return set(groups)
        return await super().get_user_groups(auth_state)

    async def refresh_user(self, user, handler=None, **kwargs):
        """Every ``auth.oidc.refresh_seconds`` the provider is asked again: groups and admin follow it, and someone
        it no longer allows must sign in again (and is refused). A provider that does not answer keeps people
        signed in rather than signing everyone out."""
        try:
            model = await super().refresh_user(user, handler, **kwargs)
        except SignInError as e:
            if e.status_code != 503:
                raise
            self.log.warning("refreshing %s's sign-in: the provider does not answer; kept signed in", user.name)
            return True
        if isinstance(model, dict):
            allowed = self.check_allowed(user.name, model)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                self.log.warning("%s is no longer allowed by %s: signed out", user.name, self.institution_name)
                return False
        return model

    # ------------------------------------------------------------ the server

    async def pre_spawn_start(self, user, spawner):
        """Tokens reach the server only with ``auth.oidc.pass_tokens_to_server``."""
        result = super().pre_spawn_start(user, spawner)
        if inspect.isawaitable(result):
            await result
        if not self.pass_tokens_to_server:
            return
        state = await user.get_auth_state() or {}
        spawner.environment = dict(spawner.environment or {})
        spawner.environment["OIDC_ACCESS_TOKEN"] = state.get("access_token") or ""
        spawner.environment["OIDC_ID_TOKEN"] = state.get("id_token") or ""
