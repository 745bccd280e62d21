"""Admins' run-time settings of profiles, and the log of every admin change other than budgets.

The rules are :mod:`cost_reports.profile_rules` (pure); this module reads and writes them in the
ledger database, each change together with its log entry in one transaction, checked against the
value it replaces (a change based on a stale page is refused, not silently merged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from .db import CostDB
from .models import AdminChange, ProfileSetting
from .profile_rules import Access, ProfileSettings

ACCESS, IDLE = "access", "idle_minutes"


@dataclass(frozen=True)
class Change:
    """One logged change; ``old``/``new`` as text for people (``-`` where nothing was set)."""

    id: int
    at: datetime
    actor: str
    action: str
    scope: str  # profile | group
    name: str
    old: str
    new: str
    reason: str


def _change(row: AdminChange) -> Change:
    return Change(row.id, row.at, row.actor, row.action, row.scope, row.name, row.old, row.new, row.reason)


class SettingsStore:
    def __init__(self, db: CostDB):
        self.db = db

    def settings(self) -> ProfileSettings:
        """Every profile setting made by admins (one small query: read at every spawn)."""
        with self.db.read() as s:
            rows = s.execute(select(ProfileSetting.slug, ProfileSetting.key, ProfileSetting.value)).all()
        access, idle = {}, {}
        for slug, key, value in rows:
            data = json.loads(value)
            if key == ACCESS:
                access[slug] = Access.from_json(data["access"])
            elif key == IDLE:
                idle[slug] = float(data)
        return ProfileSettings(access, idle)

    def setting_info(self) -> dict[tuple[str, str], tuple[datetime, str]]:
        """(slug, key) -> (when, by whom) of each setting, for the page's "source" column."""
        with self.db.read() as s:
            rows = s.execute(select(ProfileSetting.slug, ProfileSetting.key, ProfileSetting.updated_at,
                                    ProfileSetting.updated_by)).all()
        return {(r.slug, r.key): (r.updated_at, r.updated_by) for r in rows}

    def _put(self, s, slug: str, key: str, value, actor: str) -> None:
        row = s.get(ProfileSetting, (slug, key))
        now = self.db.clock.now()
        if value is None:
            if row is not None:
                s.delete(row)
            return
        text = json.dumps(value)
        if row is None:
            s.add(ProfileSetting(slug=slug, key=key, value=text, updated_at=now, updated_by=actor))
        else:
            row.value, row.updated_at, row.updated_by = text, now, actor

    def set_access(self, slug: str, access: Access | None, *, expected: Access | None, actor: str, action: str,
                   old: str, new: str, reason: str) -> Change:
        """Set (None: back to posehub.yaml) who may use ``slug``; ``expected`` is the run-time setting the
        change was computed from (None: none), and the change is refused (ValueError) if it differs now."""
        with self.db.write(lock_user=f"profile:{slug}") as s:
            row = s.get(ProfileSetting, (slug, ACCESS))
            current = None if row is None else Access.from_json(json.loads(row.value)["access"])
            if current != expected:
                raise ValueError(f"who may use profile {slug!r} was changed meanwhile "
                                 f"(now: {current.describe() if current else 'as in posehub.yaml'}): reload and try again")
            self._put(s, slug, ACCESS, None if access is None else {"access": access.to_json()}, actor)
            return self._log(s, actor, action, "profile", slug, old, new, reason)

    def set_idle(self, slug: str, minutes: float | None, *, actor: str, old: str, new: str, reason: str) -> Change:
        with self.db.write(lock_user=f"profile:{slug}") as s:
            self._put(s, slug, IDLE, minutes, actor)
            return self._log(s, actor, "idle limit" if minutes is not None else "idle limit reset", "profile", slug,
                             old, new, reason)

    def record(self, actor: str, action: str, scope: str, name: str, old: str, new: str, reason: str) -> Change:
        """Log a change made elsewhere (group members live in the hub's database)."""
        with self.db.write() as s:
            return self._log(s, actor, action, scope, name, old, new, reason)

    def _log(self, s, actor, action, scope, name, old, new, reason) -> Change:
        row = AdminChange(at=self.db.clock.now(), actor=actor, action=action, scope=scope, name=name, old=old, new=new,
                          reason=reason)
        s.add(row)
        s.flush()
        return _change(row)

    def changes(self, name: str | None = None) -> list[Change]:
        """Logged changes, oldest first; only those about ``name`` if given."""
        q = select(AdminChange).order_by(AdminChange.id)
        if name is not None:
            q = q.where(AdminChange.name == name)
        with self.db.read() as s:
            return [_change(r) for r in s.scalars(q)]
