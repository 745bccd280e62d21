"""What an admin may change, checked the same way for the admin page's forms and the REST API.

Each ``validate_*``/``change_*`` function checks everything first and raises :class:`api.InputError`
(a sentence, HTTP 400) before anything is written; each change is written with its audit entry
(who, what, old, new, why). Budgets are kept by :mod:`cost_reports.budget_store`, profile settings
by :mod:`cost_reports.settings_store`, group members by the hub (its REST API).

Which source wins (shown on the admin page, :data:`SOURCE_RULE`): posehub.yaml is the starting
point; a profile's access or idle limit set by an admin replaces posehub.yaml's for that profile
until reset; members of posehub.yaml's ``groups`` are added back at every hub start, so they are
removed in posehub.yaml, not on the page.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from . import api, profile_rules
from .core import CostReporter
from .hubapi import HubClient
from .profile_rules import ADMINS_ONLY, OPEN, Access

log = logging.getLogger("posehub.cost")

SOURCE_RULE = (
    "posehub.yaml is the starting point. Who may use a profile and its idle limit, once set here, replace "
    "posehub.yaml's for that profile (and survive restarts) until you reset them. Members of a group listed in "
    "posehub.yaml are added back at every hub start: remove them there. Every change applies to the next spawn; "
    "running servers keep what they started with. Admins may start every profile."
)
ACCESS_ACTIONS = ("allow", "remove", "restrict", "open", "reset")
GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def _reason(value) -> str:
    if not isinstance(value, str):
        raise api.InputError("reason must be text")
    return value.strip()


# ------------------------------------------------------------ budgets


async def validate_budget_change(rep: CostReporter, directory, scope: str, name: str, amount, reason) -> api.BudgetChange:
    scope = api.scope(scope)
    users = await directory.refresh(force=True)
    name = _known(rep, users, directory.groups(), scope, name)
    value = None if amount is None else api.amount(amount, f"budget of {scope} {name!r}")
    return api.BudgetChange(scope, name, value, _reason(reason))


def apply_budget_change(rep: CostReporter, change: api.BudgetChange, actor: str):
    entry = rep.budgets.set_budget(change.scope, change.name, change.amount, actor, change.reason)
    log.info("budget: %s set %s %s: %s -> %s (%s)", actor, change.scope, change.name, entry.old, entry.new, change.reason)
    return entry


async def validate_extension(rep: CostReporter, directory, body: dict):
    users = await directory.refresh(force=True)
    user = api.known_name(body.get("user", ""), "user", users)
    amount = api.amount(body.get("amount"), f"extension for user {user!r}", positive=True)
    until = api.extension_end(rep.now(), body.get("days") or None, body.get("until") or None)
    if not str(body.get("reason", "")).strip():
        raise api.InputError("reason is needed for an extension (it goes in the audit log)")
    return user, amount, until


# ------------------------------------------------------------ profiles


@dataclass(frozen=True)
class ProfileView:
    """One profile as the admin page and ``GET /api/profiles`` show it."""

    slug: str
    display_name: str
    gpus: int
    access: Access
    access_source: str  # "posehub.yaml" or "admin page (by <who>, <when>)"
    yaml_access: Access
    idle_minutes: float
    idle_source: str
    yaml_idle_minutes: float

    def as_json(self) -> dict:
        return {"slug": self.slug, "display_name": self.display_name, "gpus": self.gpus,
                "access": self.access.to_json(), "who": self.access.describe(), "access_source": self.access_source,
                "yaml_access": self.yaml_access.to_json(), "idle_minutes": self.idle_minutes,
                "idle_source": self.idle_source, "yaml_idle_minutes": self.yaml_idle_minutes}


def _source(info, key) -> str:
    if key not in info:
        return "posehub.yaml"
    at, by = info[key]
    return f"admin page (by {by}, {at:%Y-%m-%d %H:%M} UTC)"


def profile_views(rep: CostReporter) -> list[ProfileView]:
    """Every profile with the settings that apply now and where each comes from (reads the ledger)."""
    settings, info = rep.settings.settings(), rep.settings.setting_info()
    culling = rep.cfg["culling"]
    views = []
    for yaml_p, p in zip(rep.cfg["profiles"], profile_rules.effective(rep.cfg["profiles"], settings)):
        slug = p["slug"]
        views.append(ProfileView(
            slug, p["display_name"], int(p.get("gpus") or 0), Access.of(p), _source(info, (slug, "access")),
            Access.of(yaml_p), profile_rules.idle_minutes_of(culling, p), _source(info, (slug, "idle_minutes")),
            profile_rules.idle_minutes_of(culling, yaml_p)))
    return views


def _known(rep: CostReporter, users: dict, groups: dict, scope: str, name: str) -> str:
    known = set(users) | set(rep.cfg["budgets"]["users"]) if scope == "user" else set(groups) | set(rep.cfg["groups"])
    return api.known_name(name, scope, known)


async def change_access(rep: CostReporter, directory, hub: HubClient, slug: str, action: str, scope: str, name: str,
                        reason, actor: str):
    """Allow or remove a user or group on a profile, restrict it (to admins and those allowed), open it to
    everyone, or reset it to posehub.yaml; logged. InputError, with nothing changed, when it cannot be done."""
    try:
        yaml_p = profile_rules.profile_named(rep.cfg["profiles"], slug)
    except ValueError as e:
        raise api.InputError(str(e)) from None
    if action not in ACCESS_ACTIONS:
        raise api.InputError(f"unknown action {action!r} (expected one of: {', '.join(ACCESS_ACTIONS)})")
    reason = _reason(reason)
    label = yaml_p["display_name"]
    settings = await asyncio.to_thread(rep.settings.settings)
    setting = settings.access.get(slug)
    yaml_access = Access.of(yaml_p)
    current = setting if setting is not None else yaml_access
    what = action
    if action in ("allow", "remove"):
        try:
            scope = profile_rules.scope(scope)
        except ValueError as e:
            raise api.InputError(str(e)) from None
        if action == "allow":  # one may remove a name that no longer exists, not allow one
            name = _known(rep, await directory.refresh(force=True), await hub.groups(), scope, name)
        try:
            new = (profile_rules.grant if action == "allow" else profile_rules.revoke)(current, scope, name, label)
        except ValueError as e:
            raise api.InputError(str(e)) from None
        what = f"{action} {scope} {name}"
    elif action == "restrict":
        if not current.open:
            raise api.InputError(f"'{label}' is restricted already ({current.describe()})")
        new = ADMINS_ONLY
    elif action == "open":
        if current.open:
            raise api.InputError(f"'{label}' is open to everyone already")
        new = OPEN
    else:
        if setting is None:
            raise api.InputError(f"who may use '{label}' is as in posehub.yaml already")
        new = yaml_access
    stored = None if new == yaml_access else new  # a setting equal to posehub.yaml's is no setting
    try:
        return await asyncio.to_thread(rep.settings.set_access, slug, stored, expected=setting, actor=actor,
                                       action=what, old=current.describe(), new=new.describe(), reason=reason)
    except ValueError as e:  # changed meanwhile
        raise api.InputError(str(e)) from None


async def change_idle(rep: CostReporter, slug: str, minutes, reason, actor: str):
    """Set (``minutes=None``: reset to posehub.yaml) a profile's idle limit; logged."""
    try:
        yaml_p = profile_rules.profile_named(rep.cfg["profiles"], slug)
        value = None if minutes is None else profile_rules.idle_minutes(minutes, yaml_p["display_name"])
    except ValueError as e:
        raise api.InputError(str(e)) from None
    reason = _reason(reason)
    settings = await asyncio.to_thread(rep.settings.settings)
    if value is None and slug not in settings.idle_minutes:
        raise api.InputError(f"the idle limit of '{yaml_p['display_name']}' is as in posehub.yaml already")
    culling = rep.cfg["culling"]
    old = profile_rules.idle_minutes_of(culling, profile_rules.effective([yaml_p], settings)[0])
    new = value if value is not None else profile_rules.idle_minutes_of(culling, yaml_p)
    return await asyncio.to_thread(rep.settings.set_idle, slug, value, actor=actor, old=f"{old:g} min",
                                   new=f"{new:g} min", reason=reason)


# ------------------------------------------------------------ groups


def group_views(rep: CostReporter, groups: dict[str, tuple[str, ...]]) -> list[dict]:
    """Groups of the hub (and of posehub.yaml) with their members, each marked if posehub.yaml lists it."""
    yaml = rep.cfg["groups"]
    out = []
    for name in sorted(set(groups) | set(yaml)):
        from_yaml = set((yaml.get(name) or {}).get("users") or ())
        members = sorted(set(groups.get(name, ())) | from_yaml)
        out.append({"name": name, "members": [{"name": m, "source": "posehub.yaml" if m in from_yaml else "admin page"}
                                              for m in members]})
    return out


def _members(names) -> str:
    return ", ".join(sorted(names)) or "(none)"


def _check_sso(rep: CostReporter) -> None:
    if rep.cfg["auth"]["type"] == "oidc":
        raise api.InputError(f"group members come from {rep.cfg['auth']['oidc']['institution_name']}'s sign-in "
                             "(its groups claim): change them there")


async def create_group(rep: CostReporter, hub: HubClient, name, reason, actor: str):
    _check_sso(rep)
    if not isinstance(name, str) or not GROUP_NAME.match(name):
        raise api.InputError(f"a group name is 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a "
                             f"letter or digit; got {name!r}")
    reason = _reason(reason)
    if name in await hub.groups():
        raise api.InputError(f"group {name} exists already")
    await hub.create_group(name)
    return await asyncio.to_thread(rep.settings.record, actor, "create group", "group", name, "-", "(no members)", reason)


async def change_member(rep: CostReporter, directory, hub: HubClient, group: str, user: str, add: bool, reason,
                        actor: str, admins: set[str]):
    """Add ``user`` to ``group`` or remove them; ``admins``: who may use the admin page now (hub admins and
    holders of the admin scope), so that a change never leaves it without anyone."""
    _check_sso(rep)
    reason = _reason(reason)
    groups = await hub.groups()
    if group not in groups:
        raise api.InputError(f"unknown group {group!r} (groups: {', '.join(sorted(groups)) or 'none'})")
    members = set(groups[group])
    if add:
        users = await directory.refresh(force=True)
        user = api.known_name(user, "user", users)
        if user in members:
            raise api.InputError(f"{user} is a member of {group} already")
        await hub.add_member(group, user)
        after = members | {user}
    else:
        if user not in members:
            raise api.InputError(f"{user!r} is not a member of {group}")
        if user in ((rep.cfg["groups"].get(group) or {}).get("users") or ()):
            raise api.InputError(f"{user} is a member of {group} in posehub.yaml, and the hub adds them back at every "
                                 "start: remove them there")
        admin_groups = set(rep.cfg["costs"]["admin_groups"])
        if group in admin_groups:  # its members hold the admin scope
            may_after = admins | {m for g in admin_groups for m in (groups.get(g, ()) if g != group else members - {user})}
            if not may_after:
                raise api.InputError(f"removing {user} from {group} would leave no one who may use this page")
            if actor not in may_after:
                raise api.InputError(f"removing yourself from {group} would lock you out of this page: ask another "
                                     "admin to do it")
        await hub.remove_member(group, user)
        after = members - {user}
    directory.invalidate()  # the next read sees the new membership
    return await asyncio.to_thread(rep.settings.record, actor, f"{'add' if add else 'remove'} {user}", "group", group,
                                   _members(members), _members(after), reason)


# ------------------------------------------------------------ the audit log


def audit_entries(rep: CostReporter, name: str | None = None) -> list[dict]:
    """Budget changes and every other admin change, oldest first, in one shape."""
    entries = [audit_dict(e) for e in rep.budgets.audit_log(name)] + [change_dict(c) for c in rep.settings.changes(name)]
    return sorted(entries, key=lambda e: e["at"])


def audit_dict(e) -> dict:
    return {"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "scope": e.scope, "name": e.name,
            "old": None if e.old is None else f"{e.old:.2f}", "new": None if e.new is None else f"{e.new:.2f}",
            "reason": e.reason}


def change_dict(c) -> dict:
    return {"at": c.at.isoformat(), "actor": c.actor, "action": c.action, "scope": c.scope, "name": c.name,
            "old": c.old, "new": c.new, "reason": c.reason}
