"""The cost reporter as one object: ledger, budgets, reservations and notices of a PoseHub config.

Used by the service (``cost_reports.service``), the enforcement loop and the
command line (``posehub cost report``), so all three give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from .budget_store import BudgetStore
from .budgets import BudgetPolicy
from .clock import Clock
from .db import CostDB
from .ledger import Ledger
from .money import to_amount
from .notices import Notices
from .periods import Period, parse_period, period_bounds
from .reports import AdminReport, UserReport, admin_report_from_spend, user_report
from .reservations import Reservations
from .settings_store import SettingsStore
from .profile_rules import effective


def ledger_url(cfg) -> str:
    """``costs.db_url``, or the SQLite file in the hub's state folder."""
    return cfg["costs"]["db_url"] or f"sqlite:///{cfg.state_dir / 'costs.sqlite'}"


class CostReporter:
    def __init__(self, cfg, clock: Clock | None = None, db: CostDB | None = None):
        self.cfg = cfg
        self.db = db or CostDB(ledger_url(cfg), clock)
        self.db.create_all()
        self.policy = BudgetPolicy.from_config(cfg)
        self.ledger = Ledger(self.db)
        self.budgets = BudgetStore(self.db, self.policy)
        self.reservations = Reservations(self.budgets)
        self.notices = Notices(self.db)
        self.settings = SettingsStore(self.db)
        self.block_hours = to_amount(cfg["budgets"]["minimum_block_hours"], "budgets.minimum_block_hours")

    @property
    def clock(self) -> Clock:
        return self.db.clock

    def now(self) -> datetime:
        return self.db.clock.now()

    def period(self, label: str | None = None) -> Period:
        """The period named by ``label`` ("2026-11"), or the current one; ValueError if unknown."""
        if label is None or label == "":
            return period_bounds(self.policy.period, self.now())
        return parse_period(label, self.policy.period)

    def profiles(self) -> list[dict]:
        """The profiles of posehub.yaml with admins' run-time settings applied (cost_reports.profile_rules)."""
        return effective(self.cfg["profiles"], self.settings.settings())

    def config_groups(self, user: str) -> list[str]:
        """Groups of ``user`` according to posehub.yaml (for the command line, without a hub)."""
        return sorted(g for g, spec in self.cfg["groups"].items() if user in spec.get("users", []))

    def user_report(self, user: str, groups: Iterable[str], period: Period) -> UserReport:
        spans = self.ledger.spans(period, user)
        budget = self.budgets.budget(user, groups, when=min(self.now(), period.end))
        return user_report(user, spans, period, budget, self.now())

    def admin_report(self, period: Period, groups_of: Mapping[str, Iterable[str]]) -> AdminReport:
        """Every user of ``groups_of`` ({user: groups}) and everyone with spend in ``period``.

        Spend is summed in the database (:meth:`Ledger.spend_by_user`), not from loaded spans.
        """
        by_user = self.ledger.spend_by_user(period)
        users = dict(groups_of)
        for user in by_user:
            users.setdefault(user, self.config_groups(user))
        budgets = self.budgets.budgets(users, when=min(self.now(), period.end))
        return admin_report_from_spend(by_user, period, budgets, self.now(), self.policy.default)
