"""Storage use: the size of each user's home prefix, kept in the ledger as GB-month spans.

A user's storage span (kind "storage", resource "home") carries the size in
GB as its quantity. When the measured size moves by more than
:data:`RESIZE_FRACTION` (or from/to zero) the span is closed and a new one
opened with the new size, so the ledger holds a step function of size over
time. Sizers are pluggable: :func:`local_sizer` measures the disk space
folders take (the embedded default); :func:`s3_sizer` adds up the objects
under the home prefix.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path

from .ledger import Ledger
from .money import to_amount

RESOURCE = "home"
KIND = "storage"
GB = Decimal(10**9)
RESIZE_FRACTION = Decimal("0.05")


BLOCK = 512  # st_blocks counts 512-byte units


def folder_bytes(path: Path) -> int:
    """Bytes of disk the regular files under ``path`` take (links not followed; a file with several hard
    links counted once); 0 if it does not exist. The space allocated, not the apparent size: a sparse file
    (``truncate -s 10T``) costs what it really holds."""
    total, seen = 0, set()
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * BLOCK
    return total


def local_sizer(home_bucket_root: Path) -> Callable[[str], int]:
    return lambda user: folder_bytes(home_bucket_root / user)


def s3_sizer(client, bucket: str) -> Callable[[str], int]:
    """Bytes of the objects under ``<user>/`` in the home bucket (``client``: a boto3 S3 client that may list
    it). S3 bills the bytes stored, which is what the listing says."""

    def size(user: str) -> int:
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{user}/"):
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total

    return size


def needs_new_span(old_gb: Decimal | None, new_gb: Decimal) -> bool:
    """Whether a size change is worth a new span (pure)."""
    if old_gb is None or old_gb == 0:
        return new_gb > 0
    if new_gb == 0:
        return True
    return abs(new_gb - old_gb) / old_gb > RESIZE_FRACTION


class StorageMeter:
    def __init__(self, ledger: Ledger, sizer: Callable[[str], int], price_per_gb_month):
        self.ledger = ledger
        self.sizer = sizer
        self.price = to_amount(price_per_gb_month, "costs.storage_price_per_gb_month")

    def update(self, users: Iterable[str]) -> None:
        open_by_user = {s.user: s for s in self.ledger.open_spans(kind=KIND)}
        for user in users:
            gb = (Decimal(self.sizer(user)) / GB).quantize(Decimal("0.000001"))
            span = open_by_user.get(user)
            old = span.quantity if span is not None else None
            if not needs_new_span(old, gb):
                continue
            if span is not None:
                self.ledger.close_resource(user, KIND, RESOURCE)
            if gb > 0:
                self.ledger.open_span(user, KIND, RESOURCE, self.price, quantity=gb, note="home prefix size")
