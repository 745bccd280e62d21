"""Single sign-on settings that are plain data: each provider preset's defaults, and what is unsafe in
``auth.oidc`` (checked when the config is loaded; no OAuthenticator import, so any process may load the config)."""

from __future__ import annotations

# scopes, username claim, groups claim of each provider (README: "Single sign-on")
PRESETS = {
    "generic": (["openid", "profile", "email"], "email", "groups"),
    "keycloak": (["openid", "profile", "email"], "email", "groups"),
    "okta": (["openid", "profile", "email", "groups"], "email", "groups"),
    "entra": (["openid", "profile", "email"], "oid", "groups"),
    "google": (["openid", "profile", "email"], "email", ""),
    "cilogon": (["openid", "profile", "email", "org.cilogon.userinfo"], "eppn", "isMemberOf"),
}
PUBLIC_PRESETS = ("google", "cilogon")  # anyone may have an account there
# claims the OpenID Connect spec (Core 5.1) says are neither unique nor stable: never a user's identity
UNSTABLE_CLAIMS = ("preferred_username", "name", "nickname", "given_name", "family_name")


def config_errors(o: dict) -> list[str]:
    """What is unsafe in ``auth.oidc`` (pure; the config loader reports it)."""
    claim = o["username_claim"] or PRESETS[o["preset"]][1]
    if claim in UNSTABLE_CLAIMS:
        return [f"auth.oidc.username_claim: '{claim}' is neither unique nor stable (the provider may let people "
                "choose or change it), so someone could sign in as someone else: use sub, email (taken only when "
                "verified) or your provider's own user ID"]
    if o["preset"] in PUBLIC_PRESETS and not o["allowed_groups"]:
        hint = " (with groups_claim: hd and your domain)" if o["preset"] == "google" else ""
        return [f"auth.oidc.allowed_groups: with the '{o['preset']}' preset an empty list lets anyone with an account "
                f"there sign in and spend the default budget: name the groups allowed{hint}"]
    return []
