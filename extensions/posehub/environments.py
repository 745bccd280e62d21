"""Images as local environments: ``images/<name>/requirements.txt`` -> ``.envs/<name>``.

The same pinned list is installed by ``images/<name>/Dockerfile`` on Kubernetes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .config import REPO_ROOT

IMAGES_DIR = REPO_ROOT / "images"
ENVS_DIR = Path(os.environ.get("POSEHUB_ENVS_DIR") or REPO_ROOT / ".envs")
STAMP = ".posehub-built"


def requirements_file(image: str) -> Path:
    return IMAGES_DIR / image / "requirements.txt"


def system_packages_file(image: str) -> Path:
    return IMAGES_DIR / image / "apt.txt"


def system_packages(image: str) -> list[str]:
    """The Debian packages an image installs besides its pinned list (``images/<image>/apt.txt``: one per line,
    ``#`` comments); none when it has no such file."""
    try:
        text = system_packages_file(image).read_text()
    except FileNotFoundError:
        return []
    return [ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()]


def missing_system_packages(packages: list[str]) -> list[str]:
    """Those of ``packages`` dpkg does not list as installed (all of them where there is no dpkg)."""
    if not packages:
        return []
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *packages],
                             capture_output=True, text=True).stdout
    except FileNotFoundError:
        return list(packages)
    installed = {ln.split()[0].split(":")[0] for ln in out.splitlines() if ln.endswith(" installed")}
    return [p for p in packages if p not in installed]


def install_system_packages(image: str) -> None:
    """Install the image's Debian packages with apt-get, as its Dockerfile does, when run as root; otherwise
    say which are missing, what they are for and how to install them (the environment is built regardless)."""
    missing = missing_system_packages(system_packages(image))
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing the system packages of image '{image}' ({len(missing)}): {' '.join(missing)}", flush=True)
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
        return
    print(f"warning: image '{image}' needs these Debian packages, which are missing and cannot be installed here "
          f"(needs root and apt-get): {' '.join(missing)}\n"
          f"         (listed in {system_packages_file(image).relative_to(REPO_ROOT)}; without them its desktop does "
          f"not start). Install with: sudo apt-get install --no-install-recommends {' '.join(missing)}",
          file=sys.stderr, flush=True)


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

    apt = system_packages_file(image)
    extra = apt.read_bytes() if apt.exists() else b""
    return hashlib.sha256(requirements_file(image).read_bytes() + extra + BUILD_VERSION).hexdigest()


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
    install_system_packages(image)
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
