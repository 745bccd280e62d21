"""Images as local environments: ``images/<name>/requirements.txt`` -> ``.envs/<name>``.

The same pinned list is installed by ``images/<name>/Dockerfile`` on Kubernetes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .config import REPO_ROOT

IMAGES_DIR = REPO_ROOT / "images"
ENVS_DIR = Path(os.environ.get("POSEHUB_ENVS_DIR") or REPO_ROOT / ".envs")
STAMP = ".posehub-built"


def requirements_file(image: str) -> Path:
    return IMAGES_DIR / image / "requirements.txt"


def env_dir(image: str) -> Path:
    return ENVS_DIR / image


def singleuser_command(image: str) -> Path:
    return env_dir(image) / "bin" / "jupyterhub-singleuser"


def build_command(image: str) -> str:
    """What to run to build an image's local environment (shown on the spawn page)."""
    return f"make env IMAGE={image}"


def is_built(image: str) -> bool:
    """Built means: the stamp matches the current requirements and the server command exists."""
    stamp = env_dir(image) / STAMP
    try:
        return singleuser_command(image).exists() and stamp.read_text() == _fingerprint(image)
    except OSError:
        return False


# Bump when what build() does besides installing the pinned list changes.
BUILD_VERSION = b"posehub-path-1"


def _fingerprint(image: str) -> str:
    import hashlib

    return hashlib.sha256(requirements_file(image).read_bytes() + BUILD_VERSION).hexdigest()


def link_posehub(target: Path) -> Path:
    """Make ``import posehub`` (storage, widget, pose adapters) work in the environment: a .pth
    file naming the repository's ``extensions`` folder; the Dockerfiles copy the package instead."""
    out = subprocess.run([str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         check=True, capture_output=True, text=True).stdout.strip()
    pth = Path(out) / "posehub.pth"
    pth.write_text(str(REPO_ROOT / "extensions") + "\n")
    return pth


def build(image: str, python: str = sys.executable, quiet: bool = False) -> Path:
    """Create or update ``.envs/<image>`` from its pinned list. Idempotent."""
    req = requirements_file(image)
    if not req.exists():
        raise FileNotFoundError(f"image '{image}' has no pinned list at {req}")
    if is_built(image):
        print(f"environment '{image}' is up to date ({env_dir(image)})")
        return env_dir(image)
    target = env_dir(image)
    print(f"building environment '{image}' in {target} from {req.relative_to(REPO_ROOT)} ...", flush=True)
    if not (target / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(target)], check=True)
    pip = [str(target / "bin" / "python"), "-m", "pip"]
    progress = ["--progress-bar", "on"] if not quiet else ["-q"]
    subprocess.run(pip + ["install", "--disable-pip-version-check", "-q", "-U", "pip"], check=True)
    subprocess.run(pip + ["install", "--disable-pip-version-check", *progress, "-r", str(req)], check=True)
    link_posehub(target)
    (target / STAMP).write_text(_fingerprint(image))
    print(f"environment '{image}' ready", flush=True)
    return target
