"""Each image has one pinned list, used by its Dockerfile and by the local environment."""

import re
from pathlib import Path

import pytest

from posehub import environments
from posehub.config import DEFAULT_CONFIG, load

IMAGES = Path(__file__).resolve().parents[1] / "images"


@pytest.mark.parametrize("image", sorted(p.name for p in IMAGES.iterdir() if p.is_dir()))
def test_image_has_one_pinned_list_used_by_its_dockerfile(image):
    req = IMAGES / image / "requirements.txt"
    lines = [ln.strip() for ln in req.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines, f"{req} is empty"
    unpinned = [ln for ln in lines if not re.match(r"^[A-Za-z0-9_.\-\[\]]+==[^=]+$", ln)]
    assert unpinned == [], f"not pinned with ==: {unpinned}"
    dockerfile = (IMAGES / image / "Dockerfile").read_text()
    assert "COPY requirements.txt" in dockerfile and "-r /tmp/requirements.txt" in dockerfile
    assert environments.requirements_file(image) == req


def test_base_image_has_what_the_issue_names():
    names = {ln.split("==")[0].lower() for ln in (IMAGES / "base" / "requirements.txt").read_text().splitlines()
             if "==" in ln}
    assert {"jupyterlab", "jupyterhub", "ipywidgets", "s3fs", "dask-gateway"} <= names
    # a memory/CPU indicator, Dask dashboards (bokeh) and JupyterLab's Dask panel
    assert {"jupyter-resource-usage", "bokeh", "dask_labextension"} <= names


def test_pose_image_builds_on_base_with_the_same_pins():
    """images/pose/Dockerfile installs its list on top of the base image: every base pin must hold there."""
    def pins(image):
        return {ln.split("==")[0].lower(): ln.split("==")[1].strip()
                for ln in (IMAGES / image / "requirements.txt").read_text().splitlines() if "==" in ln}

    base, pose = pins("base"), pins("pose")
    assert {k: (v, pose.get(k)) for k, v in base.items() if pose.get(k) != v} == {}
    assert {"sleap", "sleap-nn", "sleap-io", "deeplabcut", "torch", "torchvision"} <= set(pose)
    assert "FROM ${BASE_IMAGE}" in (IMAGES / "pose" / "Dockerfile").read_text()


def test_default_profiles_use_declared_images():
    cfg = load(DEFAULT_CONFIG)
    for p in cfg["profiles"]:
        assert (IMAGES / p["image"] / "requirements.txt").exists(), p["slug"]


def test_base_environment_is_built_and_matches_its_list():
    # `make test` builds it (scripts/setup.sh); the stamp ties it to the current pinned list.
    assert environments.is_built("base")


def test_pose_desktop_system_packages_are_one_list_for_the_image_and_this_machine():
    """The desktop's Debian packages (images/pose/apt.txt) are installed by the pose Dockerfile and, on one machine,
    by posehub.environments when it builds .envs/pose; the desktop's Python side is pinned in requirements.txt."""
    pkgs = environments.system_packages("pose")
    assert {"tigervnc-standalone-server", "xfce4-session", "dbus-x11", "xdotool", "xprintidle"} <= set(pkgs)
    assert all(re.match(r"^[a-z0-9][a-z0-9.+-]+$", p) for p in pkgs), pkgs
    dockerfile = (IMAGES / "pose" / "Dockerfile").read_text()
    assert "COPY apt.txt /tmp/apt.txt" in dockerfile and "$(sed -e 's/#.*//' /tmp/apt.txt)" in dockerfile
    assert "JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP=/opt/posehub/posehub/desktop/xstartup" in dockerfile
    pins = {ln.split("==")[0].lower() for ln in (IMAGES / "pose" / "requirements.txt").read_text().splitlines()
            if "==" in ln}
    assert {"jupyter-remote-desktop-proxy", "jupyter_server_proxy", "napari", "napari-deeplabcut"} <= pins
    # built means built with these packages: a changed list rebuilds (and installs) on the next `make test`
    assert environments.is_built("pose")
    assert environments.missing_system_packages(pkgs) == []
    assert environments.system_packages("base") == []


def test_missing_system_packages_are_named():
    assert environments.missing_system_packages(["dpkg", "posehub-no-such-package"]) == ["posehub-no-such-package"]
