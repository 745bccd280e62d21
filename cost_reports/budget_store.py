"""Budgets in the database: admins' run-time overrides, extensions, and the audit log.

Every change is written together with its audit entry in one transaction, and
validated before anything is written: a bad amount raises ValueError and
leaves the database as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

from .budgets import MAX_EXTENSION_DAYS, BudgetPolicy, EffectiveBudget, Extension, Overrides, effective_budget, validate_budget, validate_scope
from .clock import as_utc
from .db import CostDB
from .models import BudgetAudit, BudgetExtension, BudgetOverride
from .money import stored, to_amount


@dataclass(frozen=True)
class AuditEntry:
    """One budget change. ``old``/``new`` are None where no budget was set at that scope."""

    id: int
    at: datetime
    actor: str
    action: str  # "set", "clear" or "extend"
    scope: str
    name: str
    old: Decimal | None
    new: Decimal | None
    reason: str


def _audit(row: BudgetAudit) -> AuditEntry:
    return AuditEntry(row.id, row.at, row.actor, row.action, row.scope, row.name, row.old, row.new, row.reason)


def _extension(row: BudgetExtension) -> Extension:
    return Extension(user=row.user, amount=row.amount, granted_at=row.granted_at, until=row.until,
                     granted_by=row.granted_by, reason=row.reason, id=row.id)


def _need(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


_OV = BudgetOverride.__table__.c
_EXT = BudgetExtension.__table__.c
_ALL_OVERRIDES = select(_OV.scope, _OV.name, _OV.amount)
# one user's and every group's (there are few groups; no IN list to render per call)
_OVERRIDES_OF = _ALL_OVERRIDES.where(or_(and_(_OV.scope == "user", _OV.name == bindparam("user")), _OV.scope == "group"))
_EXTENSIONS_OF = select(*BudgetExtension.__table__.c).where(_EXT.user == bindparam("user")).order_by(_EXT.id)


def overrides_in(session: Session, user: str | None = None, groups: Iterable[str] = ()) -> Overrides:
    """Run-time budgets: all of them, or with ``user`` only those of that user and of ``groups``."""
    if user is None:
        rows = session.execute(_ALL_OVERRIDES).all()
        return Overrides(users={r.name: r.amount for r in rows if r.scope == "user"},
                         groups={r.name: r.amount for r in rows if r.scope == "group"})
    wanted = set(groups)
    rows = session.execute(_OVERRIDES_OF, {"user": user}).all()
    return Overrides(users={r.name: r.amount for r in rows if r.scope == "user"},
                     groups={r.name: r.amount for r in rows if r.scope == "group" and r.name in wanted})


def extensions_in(session: Session, user: str) -> list[Extension]:
    """All extensions of ``user``, oldest first."""
    return [_extension(r) for r in session.execute(_EXTENSIONS_OF, {"user": user})]


def budget_in(session: Session, policy: BudgetPolicy, user: str, groups: Iterable[str], when: datetime) -> EffectiveBudget:
    """The effective budget of ``user`` at ``when``, read inside ``session``."""
    groups = list(groups)
    return effective_budget(user, groups, policy, overrides_in(session, user, groups), extensions_in(session, user), when)


class BudgetStore:
    """Run-time budget overrides and extensions on top of a :class:`BudgetPolicy` from posehub.yaml."""

    def __init__(self, db: CostDB, policy: BudgetPolicy):
        self.db = db
        self.policy = policy

    def set_budget(self, scope: str, name: str, amount, actor: str, reason: str = "") -> AuditEntry:
        """Set (or with ``amount=None`` remove) the run-time budget of a user or group; logged.

        ``old`` in the log is the budget that applied at that scope before: the
        previous run-time one, else the one in posehub.yaml, else None.
        """
        validate_scope(scope)
        name = _need(name, f"{scope} name")
        actor = _need(actor, "actor")
        new = None if amount is None else stored(validate_budget(amount, scope, name))
        with self.db.write(lock_user=f"budget:{scope}:{name}") as s:
            row = s.get(BudgetOverride, (scope, name))
            config = (self.policy.users if scope == "user" else self.policy.groups).get(name)
            old = row.amount if row is not None else (None if config is None else stored(config))
            now = self.db.clock.now()
            if new is None:
                if row is not None:
                    s.delete(row)
            elif row is None:
                s.add(BudgetOverride(scope=scope, name=name, amount=new, updated_at=now, updated_by=actor))
            else:
                row.amount, row.updated_at, row.updated_by = new, now, actor
            entry = BudgetAudit(at=now, actor=actor, action="clear" if new is None else "set", scope=scope,
                                name=name, old=old, new=new, reason=reason)
            s.add(entry)
            s.flush()
            return _audit(entry)

    def grant_extension(self, user: str, amount, until: datetime, actor: str, reason: str) -> Extension:
        """Give ``user`` ``amount`` more budget from now until ``until``; logged with ``reason``."""
        user = _need(user, "user")
        actor = _need(actor, "actor")
        reason = _need(reason, "reason")
        amount = stored(to_amount(amount, f"extension for user {user!r}"))
        if amount == 0:
            raise ValueError(f"extension for user {user!r} must be > 0")
        until = as_utc(until, "extension end")
        now = self.db.clock.now()
        if until <= now:
            raise ValueError(f"extension end {until.isoformat()} is not after now ({now.isoformat()})")
        if until > now + timedelta(days=MAX_EXTENSION_DAYS):
            raise ValueError(f"extension end {until.isoformat()} is more than {MAX_EXTENSION_DAYS} days away: "
                             "grant a shorter extension, or change the user's budget instead")
        with self.db.write() as s:
            row = BudgetExtension(user=user, amount=amount, granted_at=now, until=until, granted_by=actor, reason=reason)
            s.add(row)
            s.add(BudgetAudit(at=now, actor=actor, action="extend", scope="user", name=user, old=None, new=amount,
                              reason=f"until {until.isoformat()}: {reason}"))
            s.flush()
            return _extension(row)

    def overrides(self) -> Overrides:
        with self.db.read() as s:
            return overrides_in(s)

    def extensions(self, user: str, active_at: datetime | None = None) -> list[Extension]:
        """Extensions of ``user``, all or only those valid at ``active_at``."""
        with self.db.read() as s:
            found = extensions_in(s, user)
        return found if active_at is None else [e for e in found if e.valid_at(as_utc(active_at))]

    def audit_log(self, name: str | None = None) -> list[AuditEntry]:
        """Budget changes, oldest first; only those about ``name`` if given."""
        q = select(BudgetAudit).order_by(BudgetAudit.id)
        if name is not None:
            q = q.where(BudgetAudit.name == name)
        with self.db.read() as s:
            return [_audit(r) for r in s.scalars(q)]

    def budget(self, user: str, groups: Iterable[str] = (), when: datetime | None = None) -> EffectiveBudget:
        """The budget that applies to ``user`` (member of ``groups``) at ``when`` (default now)."""
        when = as_utc(when) if when is not None else self.db.clock.now()
        with self.db.read() as s:
            return budget_in(s, self.policy, user, groups, when)

    def budgets(self, groups_of: dict[str, Iterable[str]], when: datetime | None = None) -> dict[str, EffectiveBudget]:
        """Budgets of many users at once: ``{user: groups}`` -> ``{user: EffectiveBudget}``."""
        when = as_utc(when) if when is not None else self.db.clock.now()
        with self.db.read() as s:
            ov = overrides_in(s)
            return {u: effective_budget(u, g, self.policy, ov, extensions_in(s, u), when) for u, g in groups_of.items()}
