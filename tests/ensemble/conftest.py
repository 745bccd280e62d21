from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO.parent / "shared" / "data" / "openfield"
DOWNLOADED = REPO / ".state" / "downloads" / "openfield"  # `posehub demo-data` where ../shared is missing
POSE_PY = REPO / ".envs" / "pose" / "bin" / "python"
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]



@pytest.fixture(scope="session")
def openfield() -> Path:
    """DeepLabCut's open-field example, or skip: the end-to-end tests need real frames."""
    for d in (SHARED, DOWNLOADED):
        if (d / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv").exists() and list((d / "videos").glob("*.mp4")):
            return d
    pytest.skip(f"the open-field example is missing (neither {SHARED} nor {DOWNLOADED}; `posehub demo-data`)")


@pytest.fixture(scope="session")
def pose_python() -> Path:
    if not POSE_PY.exists():
        pytest.skip(f"the pose image's environment is not built ({POSE_PY}): `make test` builds it")
    return POSE_PY


@pytest.fixture
def tiny_project(tmp_path) -> Path:
    """A DeepLabCut project of 6 small frames: enough to validate, split and read an image."""
    from PIL import Image

    folder = tmp_path / "proj" / "labeled-data" / "v1"
    folder.mkdir(parents=True)
    rows = ["scorer," + ",".join(["me"] * 8), "bodyparts," + ",".join(b for b in BODYPARTS for _ in (0, 1)),
            "coords," + ",".join(["x", "y"] * 4)]
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
        rows.append(f"labeled-data/v1/img{i:03d}.png," + ",".join(f"{v:.1f}" for v in rng.uniform(0, 24, 8)))
    csv = folder / "CollectedData_me.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv
