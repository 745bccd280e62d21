"""Storage use: home prefix sizes kept in the ledger as GB-month spans."""

import os
import subprocess
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


def test_folder_bytes_counts_the_space_files_take_not_links(tmp_path):
    (tmp_path / "alice" / "videos").mkdir(parents=True)
    (tmp_path / "alice" / "videos" / "a.mp4").write_bytes(os.urandom(3 * 2**20))
    (tmp_path / "alice" / "labels.csv").write_bytes(os.urandom(2**20))
    (tmp_path / "alice" / "link").symlink_to(tmp_path / "alice" / "videos" / "a.mp4")
    os.link(tmp_path / "alice" / "labels.csv", tmp_path / "alice" / "labels-again.csv")  # one file, two names
    os.sync()
    used = folder_bytes(tmp_path / "alice")
    assert 4 * 2**20 <= used <= 4 * 2**20 + 64 * 1024  # the blocks of 4 MiB of data (and a little filesystem slack)
    assert local_sizer(tmp_path)("alice") == used
    assert local_sizer(tmp_path)("nobody") == 0


def test_a_sparse_file_costs_what_it_holds_not_its_apparent_size(tmp_path, cost_db, clock):
    """``truncate -s 10T`` makes 10 TiB (ext4's files stop at 16) that take no disk: $250 a month if billed by
    apparent size; it must not use up a budget."""
    home = tmp_path / "alice"
    home.mkdir()
    subprocess.run(["truncate", "-s", "10T", str(home / "huge.bin")], check=True)
    with open(home / "huge.bin", "r+b") as f:  # a megabyte of real data inside it
        f.seek(2**40)
        f.write(os.urandom(2**20))
    os.sync()
    assert (home / "huge.bin").stat().st_size == 10 * 2**40
    assert folder_bytes(home) < 2 * 2**20
    ledger = Ledger(cost_db)
    clock.set(datetime(2026, 11, 1, tzinfo=UTC))
    StorageMeter(ledger, local_sizer(tmp_path), "0.023").update(["alice"])
    clock.advance(hours=730)  # a month of it
    assert ledger.spend("alice", "2026-11") < Decimal("0.0001")  # not 0.023 × 10,995 GB


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
