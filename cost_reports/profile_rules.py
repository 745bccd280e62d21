"""Who may use each profile and its idle limit, as admins set them at run time (pure: no I/O).

posehub.yaml is the starting point (``profiles[].allowed_users``/``allowed_groups``/``idle_minutes``).
An admin's setting for a profile (the admin page or its REST API) **replaces** the YAML's for that
profile until it is reset; the hub reads the settings at every spawn, so a change applies to the next
spawn without a restart. The database side is :mod:`cost_reports.settings_store`.

Every function raises :class:`ValueError` with a sentence for a person when asked for something
that cannot be done; nothing is changed then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SCOPES = ("user", "group")
MIN_IDLE_MINUTES = 5
MAX_IDLE_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class Access:
    """Who may start a profile: both None -> everyone; otherwise the users and members of the groups
    named (admins may start every profile)."""

    users: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None

    @property
    def open(self) -> bool:
        return self.users is None and self.groups is None

    @classmethod
    def of(cls, profile: Mapping) -> "Access":
        users, groups = profile.get("allowed_users"), profile.get("allowed_groups")
        if users is None and groups is None:
            return cls()
        return cls(tuple(sorted(users or ())), tuple(sorted(groups or ())))

    def names(self, scope: str) -> tuple[str, ...]:
        return (self.users if scope == "user" else self.groups) or ()

    def describe(self) -> str:
        """``everyone``, ``admins only`` or ``groups staff; users bob``."""
        if self.open:
            return "everyone"
        parts = [f"{kind} {', '.join(names)}" for kind, names in (("groups", self.groups), ("users", self.users)) if names]
        return "; ".join(parts) if parts else "admins only"

    def to_json(self) -> dict | None:
        return None if self.open else {"users": list(self.users or ()), "groups": list(self.groups or ())}

    @classmethod
    def from_json(cls, data) -> "Access":
        if data is None:
            return cls()
        return cls(tuple(sorted(data.get("users") or ())), tuple(sorted(data.get("groups") or ())))


OPEN = Access()
ADMINS_ONLY = Access((), ())


@dataclass(frozen=True)
class ProfileSettings:
    """Admins' run-time settings by profile slug (only the profiles they changed)."""

    access: Mapping[str, Access] = field(default_factory=dict)
    idle_minutes: Mapping[str, float] = field(default_factory=dict)


NO_SETTINGS = ProfileSettings()


def effective(profiles: Iterable[Mapping], settings: ProfileSettings = NO_SETTINGS) -> list[dict]:
    """The profiles of posehub.yaml with admins' settings applied (new dicts; the config is not touched)."""
    out = []
    for p in profiles:
        q = dict(p)
        access = settings.access.get(p["slug"])
        if access is not None:
            q["allowed_users"] = None if access.open else list(access.users or ())
            q["allowed_groups"] = None if access.open else list(access.groups or ())
        if p["slug"] in settings.idle_minutes:
            q["idle_minutes"] = settings.idle_minutes[p["slug"]]
        out.append(q)
    return out


def idle_minutes_of(culling: Mapping, profile: Mapping | None) -> float:
    """A profile's idle limit in minutes: its own (``idle_minutes``, an admin's setting applied by
    :func:`effective`), else ``culling.gpu_idle_minutes`` for GPU profiles, else ``culling.idle_minutes``."""
    if profile and profile.get("idle_minutes"):
        return float(profile["idle_minutes"])
    if profile and profile.get("gpus"):
        return float(culling["gpu_idle_minutes"])
    return float(culling["idle_minutes"])


def profile_named(profiles: Iterable[Mapping], slug: str) -> Mapping:
    for p in profiles:
        if p["slug"] == slug:
            return p
    known = ", ".join(p["slug"] for p in profiles)
    raise ValueError(f"there is no profile {slug!r} (profiles: {known})")


def scope(value: str) -> str:
    if value not in SCOPES:
        raise ValueError(f"unknown scope {value!r} (expected 'user' or 'group')")
    return value


def grant(access: Access, scope_: str, name: str, label: str) -> Access:
    """``access`` with the user or group ``name`` allowed; ``label`` names the profile in messages."""
    scope(scope_)
    if access.open:
        raise ValueError(f"'{label}' is open to everyone already: restrict it first, then allow {scope_} {name}")
    if name in access.names(scope_):
        raise ValueError(f"{scope_} {name} may use '{label}' already")
    names = tuple(sorted({*access.names(scope_), name}))
    return Access(names, access.groups) if scope_ == "user" else Access(access.users, names)


def revoke(access: Access, scope_: str, name: str, label: str) -> Access:
    """``access`` without the user or group ``name``."""
    scope(scope_)
    if access.open:
        raise ValueError(f"'{label}' is open to everyone: restrict it to some groups or users first")
    if name not in access.names(scope_):
        raise ValueError(f"{scope_} {name} is not among those allowed '{label}' ({access.describe()})")
    names = tuple(n for n in access.names(scope_) if n != name)
    return Access(names, access.groups) if scope_ == "user" else Access(access.users, names)


def idle_minutes(value, label: str) -> float:
    """An idle limit in minutes, from ``MIN_IDLE_MINUTES`` to a week."""
    try:
        minutes = float(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"idle limit of '{label}' must be a number of minutes, got {value!r}") from None
    if not (MIN_IDLE_MINUTES <= minutes <= MAX_IDLE_MINUTES):
        raise ValueError(f"idle limit of '{label}' must be from {MIN_IDLE_MINUTES} minutes to a week "
                         f"({MAX_IDLE_MINUTES} minutes), got {value!r}")
    return minutes
