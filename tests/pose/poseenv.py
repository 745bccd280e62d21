"""Run code in the pose image's environment (.envs/pose) from the hub's pytest; it prints one JSON line."""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POSE_PY = REPO / ".envs" / "pose" / "bin" / "python"


def run_pose(code: str, tmp_path) -> dict:
    if not POSE_PY.exists():
        pytest.fail(f"the pose image's environment is not built ({POSE_PY}): `make test` builds it")
    r = subprocess.run([str(POSE_PY), "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
