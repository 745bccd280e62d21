"""The environment in every record: its package lock is listed once, and again when a package is installed."""

import os

from posehub.pose import record


def test_the_lock_follows_what_is_installed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # a folder of packages, as pip install --target makes
    first = record.environment()
    assert record.environment()["lock_sha256"] == first["lock_sha256"]  # listed once
    dist = tmp_path / "posehub_test_pkg-1.2.dist-info"
    dist.mkdir()  # installed into a folder already on the path: its modification time changes
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: posehub-test-pkg\nVersion: 1.2\n")
    os.utime(tmp_path, ns=(os.stat(tmp_path).st_atime_ns, os.stat(tmp_path).st_mtime_ns + 1_000_000))
    assert "posehub-test-pkg==1.2" in record._installed()
    assert record.environment()["lock_sha256"] != first["lock_sha256"]
