"""Storage use: the size of each user's home prefix, kept in the ledger as GB-month spans.

A user's storage span (kind "storage", resource "home") carries the size in
GB as its quantity. When the measured size moves by more than
:data:`RESIZE_FRACTION` (or from/to zero) the span is closed and a new one
opened with the new size, so the ledger holds a step function of size over
time. Sizers are pluggable: :func:`local_sizer` measures folders (the
embedded default); an S3 sizer lists the home prefix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path

from .ledger import Ledger
from .money import to_amount

RESOURCE = "home"
KIND = "storage"
GB = Decimal(10**9)
RESIZE_FRACTION = Decimal("0.05")


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed); 0 if it does not exist."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, f)):
                total += st.st_size
    return total


def local_sizer(home_bucket_root: Path) -> Callable[[str], int]:
    return lambda user: folder_bytes(home_bucket_root / user)


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
