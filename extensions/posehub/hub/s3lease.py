"""When a running server's short-lived S3 credentials are renewed (pure: times in, times out).

STS credentials end (``buckets.sts.duration_seconds``, at most 12 h; 1 h where the hub's own
role is itself assumed). The hub renews each running server's set before its end, and the
clients pick the new set up by themselves: s3fs asks the hub's credential endpoint again once
its set is within 20 minutes of the end, botocore (``posehub.storage``, Dask workers) re-reads
the manifest within 15 minutes of it. So the hub renews 25 minutes before the end, or half-way
through credentials shorter than 50 minutes: both clients then always find a set that is not
about to end.
"""

from __future__ import annotations

from datetime import datetime, timedelta

RENEW_BEFORE = timedelta(minutes=25)
RETRY_MIN = timedelta(seconds=1)
RETRY_MAX = timedelta(seconds=60)


def renew_at(issued: datetime, expires: datetime) -> datetime:
    """When credentials issued at ``issued`` and ending at ``expires`` are renewed."""
    life = max(expires - issued, timedelta(0))
    return expires - min(RENEW_BEFORE, life / 2)


def retry_at(now: datetime, expires: datetime | None) -> datetime:
    """After a renewal that failed (STS down, the role's trust changed): try again soon, more often as
    the end nears, at most a minute apart."""
    if expires is None:
        return now + RETRY_MIN
    return now + min(RETRY_MAX, max(RETRY_MIN, (expires - now) / 10))


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as STS and the manifest write it (``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
