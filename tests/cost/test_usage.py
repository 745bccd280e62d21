"""Storage use: home prefix sizes kept in the ledger as GB-month spans."""

from datetime import datetime, timezone
from decimal import Decimal

from cost_reports.ledger import Ledger
from cost_reports.usage import StorageMeter, folder_bytes, local_sizer, needs_new_span

UTC = timezone.utc


def test_needs_new_span():
    assert needs_new_span(None, Decimal("0.5"))
    assert not needs_new_span(None, Decimal(0))
    assert not needs_new_span(Decimal(10), Decimal("10.4"))  # 4 %: kept
    assert needs_new_span(Decimal(10), Decimal("10.6"))  # 6 %: new span
    assert needs_new_span(Decimal(10), Decimal(0))


def test_folder_bytes_counts_files_not_links(tmp_path):
    (tmp_path / "alice" / "videos").mkdir(parents=True)
    (tmp_path / "alice" / "videos" / "a.mp4").write_bytes(b"x" * 1000)
    (tmp_path / "alice" / "labels.csv").write_bytes(b"y" * 24)
    (tmp_path / "alice" / "link").symlink_to(tmp_path / "alice" / "videos" / "a.mp4")
    assert folder_bytes(tmp_path / "alice") == 1024
    assert local_sizer(tmp_path)("alice") == 1024
    assert local_sizer(tmp_path)("nobody") == 0


def test_storage_spans_follow_the_size(cost_db, clock):
    ledger = Ledger(cost_db)
    sizes = {"alice": 2 * 10**9, "bob": 0}
    meter = StorageMeter(ledger, lambda u: sizes[u], "0.023")
    clock.set(datetime(2026, 11, 1, tzinfo=UTC))
    meter.update(["alice", "bob"])
    (span,) = ledger.open_spans(kind="storage")
    assert (span.user, span.quantity, span.rate, span.unit) == ("alice", Decimal(2), Decimal("0.023"), "GB-month")
    clock.advance(hours=73)  # 2 GB for 73 h = 2 × 0.023 × 73 / 730 = $0.0046
    sizes["alice"] = int(2.05 * 10**9)  # +2.5 %: same span
    meter.update(["alice", "bob"])
    assert [s.id for s in ledger.open_spans(kind="storage")] == [span.id]
    sizes["alice"] = 4 * 10**9  # doubled: the old span closes, a new one opens
    meter.update(["alice", "bob"])
    closed = [s for s in ledger.spans("2026-11", "alice") if s.end is not None]
    assert [(s.id, s.cost) for s in closed] == [(span.id, Decimal("0.004600"))]
    clock.advance(hours=365)  # 4 GB for 365 h = 4 × 0.023 / 2 = $0.046
    assert ledger.spend("alice", "2026-11") == Decimal("0.050600")
    sizes["alice"] = 0  # emptied: nothing open any more
    meter.update(["alice", "bob"])
    assert ledger.open_spans(kind="storage") == []
    assert ledger.spend("alice", "2026-11") == Decimal("0.050600")
