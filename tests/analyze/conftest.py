import json
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO.parent / "shared" / "data" / "openfield"
DOWNLOADED = REPO / ".state" / "downloads" / "openfield"  # `posehub demo-data` where ../shared is missing
POSE_PY = REPO / ".envs" / "pose" / "bin" / "python"
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


@pytest.fixture(scope="session")
def openfield() -> Path:
    """DeepLabCut's open-field example (labels and the 2330-frame video), from ../shared (or downloaded)."""
    for d in (SHARED, DOWNLOADED):
        if all((d / f).exists() for f in ("labeled-data/m4s1/CollectedData_Pranav.csv", "videos/m3v1mp4.mp4")):
            return d
    pytest.fail(f"the open-field example is missing: neither {SHARED} nor {DOWNLOADED} (`posehub demo-data`)")


@pytest.fixture(scope="session")
def pose_python() -> Path:
    if not POSE_PY.exists():
        pytest.fail(f"the pose image's environment is not built ({POSE_PY}): `make test` builds it")
    return POSE_PY


@pytest.fixture
def run_step(pose_python):
    """Run a step of ``analyze_steps.py`` in the pose image's environment; the JSON line it prints."""

    def run(mode: str, out: Path, *args, timeout: int = 420) -> dict:
        env = dict(os.environ, PYTHONPATH=str(REPO / "extensions"), OMP_NUM_THREADS="1")
        r = subprocess.run([str(pose_python), str(HERE / "analyze_steps.py"), mode, str(out), *map(str, args)],
                           capture_output=True, text=True, timeout=timeout, cwd=out, env=env)
        assert r.returncode == 0, r.stderr[-6000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A PoseHub run folder as far as the checks go (model.json, run.json); no model in it."""
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"framework": "sleap", "bodyparts": BODYPARTS, "info": {}}))
    (d / "run.json").write_text(json.dumps({"framework": "sleap", "seed": 3}))
    return d
