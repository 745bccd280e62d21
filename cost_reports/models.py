"""Tables of the cost ledger (SQLAlchemy 2 typed ORM).

Two column types keep the database honest about time and money:

* :class:`UTCDateTime`: aware datetimes in, aware UTC datetimes out. PostgreSQL
  stores ``timestamptz``; SQLite has no time zones, so the value is stored as
  naive UTC and given ``tzinfo=UTC`` again when read.
* :class:`Money`: ``Decimal`` with 6 decimals. PostgreSQL stores
  ``NUMERIC(18, 6)``; SQLite's NUMERIC affinity would turn values into binary
  floats, so there the amount is stored as an integer number of millionths of
  a dollar (``BIGINT``: $3.63 is 3630000), exact, and summed and compared
  exactly by SQLite itself (:func:`money_sum`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, Numeric, String, Text, func, text, type_coerce
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from .clock import UTC, as_utc
from .money import stored


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (naive ones are refused)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator):
    """Exact ``Decimal`` with 6 decimals: NUMERIC(18, 6), or integer millionths on SQLite."""

    impl = Numeric(18, 6, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 6, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = stored(Decimal(value))
        return int(value.scaleb(6)) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return from_micros(value)
        return stored(Decimal(str(value)))


def from_micros(value) -> Decimal:
    """Integer millionths of a dollar (SQLite's storage of :class:`Money`) as a Decimal with 6 decimals."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"money stored on SQLite must be integer millionths, got {value!r} "
                        "(a ledger from before money was stored as integers?)")
    return Decimal(value).scaleb(-6)


def money_sum(column, dialect: str):
    """A SQL ``SUM`` of a :class:`Money` column that is exact on every backend; read it with :func:`money_total`.

    PostgreSQL sums NUMERIC exactly; SQLite sums the integer millionths as
    64-bit integers (and raises on overflow rather than losing digits).
    """
    if dialect == "sqlite":
        return func.sum(type_coerce(column, BigInteger()))
    return func.sum(type_coerce(column, Numeric(18, 6, asdecimal=True)))


def money_total(value, dialect: str) -> Decimal:
    """The Decimal value (6 decimals) of a :func:`money_sum` result; 0 for SQL NULL (nothing summed)."""
    if value is None:
        return stored(Decimal(0))
    if dialect == "sqlite":
        return from_micros(value)
    return stored(Decimal(str(value)))


def sqlite_money_problems(connection) -> list[str]:
    """Money columns of an existing SQLite ledger not declared as integers (a ledger from an older layout)."""
    problems = []
    for table in Base.metadata.sorted_tables:
        declared = {row[1]: row[2].upper() for row in connection.exec_driver_sql(f'PRAGMA table_info("{table.name}")')}
        for column in table.columns:
            if isinstance(column.type, Money) and column.name in declared and "INT" not in declared[column.name]:
                problems.append(f"{table.name}.{column.name} ({declared[column.name]})")
    return problems


class Base(DeclarativeBase):
    pass


class Span(Base):
    """A stretch of use of one resource by one user.

    ``end`` is NULL while the span is open. ``rate`` is the price per ``unit``
    at the time ("hour" for compute, "GB-month" for storage); ``quantity`` is 1
    for compute and the size in GB for storage. ``cost`` is set when the span
    closes (6 decimals).
    """

    __tablename__ = "cost_spans"
    __table_args__ = (
        Index("ix_cost_spans_open", "user", "kind", "resource_id", "end"),
        # a resource has at most one open span: kept by the database, not only by the code that opens them
        Index("ux_cost_spans_one_open", "user", "kind", "resource_id", unique=True,
              sqlite_where=text('"end" IS NULL'), postgresql_where=text('"end" IS NULL')),
        # spend in a period (cost_reports.spend), of one user and of all: spans starting in it
        # (covering the inside sums) ...
        Index("ix_cost_spans_user_start", "user", "start", "end", "cost"),
        Index("ix_cost_spans_start", "start", "end", "user", "cost"),
        # ... and spans still open or ending after it began
        Index("ix_cost_spans_user_end", "user", "end", "start"),
        Index("ix_cost_spans_end", "end", "start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    profile: Mapped[str] = mapped_column(String(255), default="")
    resource_id: Mapped[str] = mapped_column(String(255), default="")
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rate: Mapped[Decimal] = mapped_column(Money)
    unit: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[Decimal] = mapped_column(Money, default=Decimal(1))
    cost: Mapped[Decimal | None] = mapped_column(Money)
    note: Mapped[str] = mapped_column(Text, default="")


class Reservation(Base):
    """Money set aside for a spawn until it is settled (span opened) or released."""

    __tablename__ = "cost_reservations"
    __table_args__ = (Index("ix_cost_reservations_held", "user", "state", "expires_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    amount: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | settled | released
    span_id: Mapped[int | None] = mapped_column(ForeignKey("cost_spans.id"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserLock(Base):
    """One row per user, locked with SELECT ... FOR UPDATE to serialise reservations (PostgreSQL)."""

    __tablename__ = "cost_user_locks"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)


class BudgetOverride(Base):
    """A budget set at run time by an admin for one user or group; wins over posehub.yaml."""

    __tablename__ = "cost_budget_overrides"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)  # user | group
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(255))


class BudgetExtension(Base):
    """Extra money for one user until ``until``, granted by an admin."""

    __tablename__ = "cost_budget_extensions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    granted_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")


class BudgetAudit(Base):
    """Every budget change and extension: who, when, what, old and new value."""

    __tablename__ = "cost_budget_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))  # set | clear | extend
    scope: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(255))
    old: Mapped[Decimal | None] = mapped_column(Money)
    new: Mapped[Decimal | None] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(Text, default="")


class ProfileSetting(Base):
    """An admin's run-time setting of one profile (``key``: ``access`` or ``idle_minutes``, ``value`` JSON);
    wins over posehub.yaml for that profile until reset (cost_reports.profile_rules)."""

    __tablename__ = "posehub_profile_settings"

    slug: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(255))


class AdminChange(Base):
    """Every change made on the admin page or its API other than budgets (profile access, idle limits,
    group members): who, when, what, old and new (as text), why."""

    __tablename__ = "posehub_admin_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))  # profile | group
    name: Mapped[str] = mapped_column(String(255))
    old: Mapped[str] = mapped_column(Text, default="")
    new: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")
