"""Watches and the videos they found, kept in the hub's ledger database (SQLite or PostgreSQL).

One row per watch, one per (watch, key, ETag) found: that unique key is what makes a watch analyse each
video once, across restarts of the hub and of this service, and whichever process finds it first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from cost_reports.db import CostDB
from cost_reports.models import UTCDateTime
from sqlalchemy import BigInteger, Float, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .policy import Found, WatchSpec

ACTIVE, PAUSED = "active", "paused"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


class Base(DeclarativeBase):
    pass


class Watch(Base):
    __tablename__ = "posehub_watches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    bucket: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(600))
    model: Mapped[str] = mapped_column(String(600))
    profile: Mapped[str] = mapped_column(String(255))
    out_bucket: Mapped[str] = mapped_column(String(255))
    out_prefix: Mapped[str] = mapped_column(String(600))
    state: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class Item(Base):
    __tablename__ = "posehub_watch_items"
    __table_args__ = (UniqueConstraint("watch_id", "key", "etag", name="uq_watch_item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    watch_id: Mapped[int] = mapped_column(Integer, index=True)
    key: Mapped[str] = mapped_column(String(1024))
    etag: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str] = mapped_column(Text, default="{}")  # JSON: outputs, frames, confidence, seconds
    found: Mapped[datetime] = mapped_column(UTCDateTime)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class WatchRecord:
    id: int
    owner: str
    bucket: str
    prefix: str
    model: str
    profile: str
    out_bucket: str
    out_prefix: str
    state: str
    reason: str
    created_by: str
    created: datetime

    @property
    def spec(self) -> WatchSpec:
        return WatchSpec(self.bucket, self.prefix, self.model, self.profile, self.out_bucket, self.out_prefix)


@dataclass(frozen=True)
class ItemRecord:
    id: int
    watch_id: int
    key: str
    etag: str
    size: int
    mtime: float | None
    state: str
    attempts: int
    error: str
    result: dict
    found: datetime
    started: datetime | None
    finished: datetime | None

    def view(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


def _watch(w: Watch) -> WatchRecord:
    return WatchRecord(w.id, w.owner, w.bucket, w.prefix, w.model, w.profile, w.out_bucket, w.out_prefix, w.state,
                       w.reason, w.created_by, w.created)


def _item(i: Item) -> ItemRecord:
    return ItemRecord(i.id, i.watch_id, i.key, i.etag, i.size, i.mtime, i.state, i.attempts, i.error,
                      json.loads(i.result or "{}"), i.found, i.started, i.finished)


class WatchStore:
    def __init__(self, db: CostDB):
        self.db = db
        Base.metadata.create_all(db.engine)

    # ------------------------------------------------------------ watches

    def add(self, owner: str, spec: WatchSpec, created_by: str) -> WatchRecord:
        with self.db.write() as s:
            w = Watch(owner=owner, bucket=spec.bucket, prefix=spec.prefix, model=spec.model, profile=spec.profile,
                      out_bucket=spec.out_bucket, out_prefix=spec.out_prefix, state=ACTIVE, reason="",
                      created_by=created_by, created=self.db.clock.now())
            s.add(w)
            s.flush()
            return _watch(w)

    def get(self, watch_id: int) -> WatchRecord | None:
        with self.db.read() as s:
            w = s.get(Watch, watch_id)
            return None if w is None else _watch(w)

    def watches(self, owner: str | None = None, state: str | None = None) -> list[WatchRecord]:
        q = select(Watch).order_by(Watch.id)
        if owner is not None:
            q = q.where(Watch.owner == owner)
        if state is not None:
            q = q.where(Watch.state == state)
        with self.db.read() as s:
            return [_watch(w) for w in s.scalars(q)]

    def set_state(self, watch_id: int, state: str, reason: str = "") -> WatchRecord | None:
        with self.db.write() as s:
            w = s.get(Watch, watch_id)
            if w is None:
                return None
            w.state, w.reason = state, reason
            return _watch(w)

    def delete(self, watch_id: int) -> None:
        with self.db.write() as s:
            w = s.get(Watch, watch_id)
            if w is not None:
                s.delete(w)
            for i in s.scalars(select(Item).where(Item.watch_id == watch_id)):
                s.delete(i)

    # ------------------------------------------------------------ what a watch found

    def known(self, watch_id: int) -> set[tuple[str, str]]:
        with self.db.read() as s:
            return {(k, e) for k, e in s.execute(select(Item.key, Item.etag).where(Item.watch_id == watch_id))}

    def stats(self, watch_id: int) -> dict[tuple[str, int, float], str]:
        """``{(key, size, mtime): etag}`` of the local files already hashed (not hashed again)."""
        with self.db.read() as s:
            return {(k, z, m): e for k, z, m, e in s.execute(
                select(Item.key, Item.size, Item.mtime, Item.etag).where(Item.watch_id == watch_id,
                                                                         Item.mtime.is_not(None)))}

    def enqueue(self, watch_id: int, found: Found) -> ItemRecord | None:
        """The new item, or None when this (key, ETag) was already found (by this or another process)."""
        try:
            with self.db.write() as s:
                i = Item(watch_id=watch_id, key=found.key, etag=found.etag, size=found.size, mtime=found.mtime,
                         state=QUEUED, attempts=0, error="", result="{}", found=self.db.clock.now())
                s.add(i)
                s.flush()
                return _item(i)
        except IntegrityError:
            return None

    def items(self, watch_id: int | None = None, state: str | None = None) -> list[ItemRecord]:
        q = select(Item).order_by(Item.id)
        if watch_id is not None:
            q = q.where(Item.watch_id == watch_id)
        if state is not None:
            q = q.where(Item.state == state)
        with self.db.read() as s:
            return [_item(i) for i in s.scalars(q)]

    def counts(self, watch_id: int) -> dict[str, int]:
        out = {QUEUED: 0, RUNNING: 0, DONE: 0, FAILED: 0}
        with self.db.read() as s:
            for state, n in s.execute(select(Item.state, func.count()).where(Item.watch_id == watch_id)
                                      .group_by(Item.state)):
                out[state] = n
        return out

    def started(self, item_id: int) -> None:
        with self.db.write() as s:
            i = s.get(Item, item_id)
            i.state, i.started, i.attempts = RUNNING, self.db.clock.now(), i.attempts + 1

    def finished(self, item_id: int, state: str, error: str = "", result: dict | None = None,
                 count_attempt: bool = True) -> None:
        """The end of an attempt (``state`` QUEUED: it waits for another). ``count_attempt`` False: the attempt
        never started an analysis (no cluster was given) and does not count. The clusters attempts started
        are kept (see :meth:`note_cluster`)."""
        with self.db.write() as s:
            i = s.get(Item, item_id)
            if i is None:
                return
            clusters = json.loads(i.result or "{}").get("clusters", [])
            i.state, i.error = state, error
            i.result = json.dumps({**(result or {}), "clusters": clusters}, default=str)
            i.finished = self.db.clock.now() if state in (DONE, FAILED) else None
            if not count_attempt:
                i.attempts = max(i.attempts - 1, 0)

    def note_cluster(self, item_id: int, name: str) -> None:
        """An attempt started Dask cluster ``name``: recorded at once, so that if the attempt dies (a restart),
        the next one stops it first and it is never left running at the owner's cost."""
        with self.db.write() as s:
            i = s.get(Item, item_id)
            if i is None:
                return
            result = json.loads(i.result or "{}")
            result["clusters"] = [*result.get("clusters", []), name]
            i.result = json.dumps(result, default=str)

    def requeue_running(self) -> int:
        """After a restart: items whose job died with the old service go back to the queue."""
        with self.db.write() as s:
            items = list(s.scalars(select(Item).where(Item.state == RUNNING)))
            for i in items:
                i.state = QUEUED
            return len(items)
