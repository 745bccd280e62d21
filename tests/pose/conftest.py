from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "openfield"
DOWNLOADED = REPO / ".state" / "downloads" / "openfield"  # `posehub demo-data` where ../shared is missing


@pytest.fixture(scope="session")
def openfield() -> Path:
    """DeepLabCut's open-field example (116 labelled frames, 4 body parts), from ../shared (or downloaded)."""
    for d in (SHARED, DOWNLOADED):
        if (d / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv").exists():
            return d
    pytest.fail(f"the open-field example is missing: neither {SHARED} nor {DOWNLOADED} (`posehub demo-data`)")
