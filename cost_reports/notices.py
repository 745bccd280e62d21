"""Notices to users: budget warnings and "your work was stopped" messages.

The enforcement loop writes one notice per user, period and level (a warning
at 80 % is given once per period, not every minute); the hub's home page and
JupyterLab show the latest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from .db import CostDB
from .models import Base, UTCDateTime

STOPPED = "stopped"


class Notice(Base):
    __tablename__ = "cost_notices"
    __table_args__ = (UniqueConstraint("user", "period", "level", name="uq_cost_notice"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    period: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(16))  # "80", "95", ... or "stopped"
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class NoticeRecord:
    id: int
    user: str
    period: str
    level: str
    at: datetime
    message: str


def _record(n: Notice) -> NoticeRecord:
    return NoticeRecord(n.id, n.user, n.period, n.level, n.at, n.message)


class Notices:
    def __init__(self, db: CostDB):
        self.db = db

    def add_once(self, user: str, period: str, level: str, message: str) -> bool:
        """Record a notice unless one of this level exists for the user and period; True if new."""
        try:
            with self.db.write() as s:
                exists = s.scalars(select(Notice.id).where(Notice.user == user, Notice.period == period,
                                                           Notice.level == level)).first()
                if exists is not None:
                    return False
                s.add(Notice(user=user, period=period, level=level, at=self.db.clock.now(), message=message))
            return True
        except IntegrityError:  # written by another process at the same moment
            return False

    def clear(self, user: str, period: str, level: str) -> None:
        """Forget a notice (e.g. "stopped" after an admin granted an extension)."""
        with self.db.write() as s:
            for n in s.scalars(select(Notice).where(Notice.user == user, Notice.period == period, Notice.level == level)):
                s.delete(n)

    def latest(self, user: str, period: str) -> NoticeRecord | None:
        with self.db.read() as s:
            n = s.scalars(select(Notice).where(Notice.user == user, Notice.period == period)
                          .order_by(Notice.at.desc(), Notice.id.desc())).first()
            return None if n is None else _record(n)

    def of(self, user: str, period: str) -> list[NoticeRecord]:
        with self.db.read() as s:
            q = select(Notice).where(Notice.user == user, Notice.period == period).order_by(Notice.id)
            return [_record(n) for n in s.scalars(q)]
