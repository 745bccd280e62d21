"""posehub.desktop without a hub: which tool opens what, clear errors, and the idle check against a real X server
(TigerVNC's, started here as the desktop's session would be)."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from posehub import desktop
from posehub.desktop import DesktopError, apps as launch_mod


def test_which_tool_opens_what(tmp_path):
    slp = tmp_path / "a.slp"
    slp.write_bytes(b"")
    assert desktop.tool_for(slp) == ("sleap", slp)
    proj = tmp_path / "proj"
    (proj / "labeled-data" / "m4s1").mkdir(parents=True)
    (proj / "config.yaml").write_text("Task: x\n")
    assert desktop.tool_for(proj) == ("napari", proj / "labeled-data" / "m4s1")
    assert desktop.tool_for(proj / "config.yaml") == ("napari", proj / "labeled-data" / "m4s1")
    assert desktop.tool_for(proj / "labeled-data" / "m4s1") == ("napari", proj / "labeled-data" / "m4s1")


@pytest.mark.parametrize("make, message", [
    (lambda t: t / "missing.slp", "no such file or folder"),
    (lambda t: (t / "notes.txt").write_text("x") and t / "notes.txt", "not a labelling project PoseHub knows"),
    (lambda t: (t / "p" / "labeled-data").mkdir(parents=True) or t / "p", "has no labeled-data/<video> folder"),
])
def test_what_cannot_be_opened_says_why(tmp_path, make, message):
    with pytest.raises(DesktopError, match=message):
        desktop.tool_for(make(tmp_path))


def test_no_desktop_running_says_how_to_open_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    slp = tmp_path / "a.slp"
    slp.write_bytes(b"")
    with pytest.raises(DesktopError, match="open it from JupyterLab's Launcher"):
        desktop.open_project(slp)
    # a display recorded by an earlier desktop that is gone
    desktop.display_file().parent.mkdir(parents=True)
    desktop.display_file().write_text(":987\n")
    with pytest.raises(DesktopError, match="Your desktop is not running"):
        desktop.open_project(slp)
    assert not (tmp_path / ".posehub" / "desktop" / "sleap.log").exists()  # nothing started
    with pytest.raises(DesktopError, match="unknown tool"):
        desktop.command("gimp")


def test_launcher_refuses_bad_arguments(capsys, monkeypatch):
    assert launch_mod.main([]) == 2 and "usage" in capsys.readouterr().err
    assert launch_mod.main(["gimp"]) == 2
    monkeypatch.delenv("DISPLAY", raising=False)
    assert launch_mod.main(["sleap"]) == 2 and "no DISPLAY" in capsys.readouterr().err


def test_display_files_are_per_server(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "")
    assert desktop.display_file(tmp_path).name == "default.display"
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "gpu")
    assert desktop.display_file(tmp_path).name == "gpu.display"
    desktop.display_file(tmp_path).parent.mkdir(parents=True)
    desktop.display_file(tmp_path).write_text("; rm -rf ~\n")
    assert desktop.recorded_display(tmp_path) is None  # only ":<n>" is ever used as a display


@pytest.fixture
def xserver(tmp_path):
    """A real TigerVNC X server on a Unix socket, run through the desktop's own session script (XFCE)."""
    if not shutil.which("vncserver"):
        pytest.fail("TigerVNC is missing: `make test` installs images/pose/apt.txt")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "JUPYTERHUB_SERVER_NAME": ""}
    proc = subprocess.Popen(["vncserver", "-rfbunixpath", str(tmp_path / "vnc.sock"), "-rfbport", "-1", "-fg",
                             "-xstartup", str(desktop.XSTARTUP), "-geometry", "800x600", "-SecurityTypes", "None"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while desktop.recorded_display(home) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    disp = desktop.recorded_display(home)
    try:
        yield home, env
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        subprocess.run(["pkill", "-KILL", "-f", f"rfbunixpath {tmp_path}/vnc.sock"])  # Xtigervnc is its own
        if disp:
            desktop.display_file(home, "").write_text(disp + "\n")
            desktop.remove_leftovers(home, os.getuid(), server="")


def test_the_session_records_its_display_and_reports_input_idle_time(xserver):
    home, env = xserver
    disp = desktop.recorded_display(home)
    assert disp and disp.startswith(":")
    assert oct((home / ".posehub" / "desktop").stat().st_mode & 0o777) == "0o700"
    assert desktop.display(home) == disp
    subprocess.run(["xdotool", "mousemove", "10", "10"], env={**env, "DISPLAY": disp}, check=True)
    idle = desktop.input_idle_seconds(home)
    assert idle is not None and 0 <= idle < 30
    time.sleep(2.5)
    assert desktop.input_idle_seconds(home) >= 2  # no input since: the idle time grows
    subprocess.run(["xdotool", "mousemove", "20", "20"], env={**env, "DISPLAY": disp}, check=True)
    assert desktop.input_idle_seconds(home) < 2


def test_leftover_x_files_of_a_killed_desktop_are_removed_when_they_are_the_users(xserver, tmp_path):
    home, env = xserver
    n = desktop.recorded_display(home)[1:]
    fake_tmp = tmp_path / "tmp"
    (fake_tmp / ".X11-unix").mkdir(parents=True)
    lock, sock = fake_tmp / f".X{n}-lock", fake_tmp / ".X11-unix" / f"X{n}"
    lock.write_text("1\n")
    sock.write_text("")
    other = fake_tmp / f".X{int(n) + 1}-lock"
    other.write_text("2\n")
    assert desktop.remove_leftovers(home, uid=os.getuid() + 1, tmp=str(fake_tmp)) == []  # not theirs: kept
    assert lock.exists() and desktop.recorded_display(home) is None  # the record of an ended desktop goes
    desktop.display_file(home).write_text(f":{n}\n")
    assert sorted(desktop.remove_leftovers(home, uid=os.getuid(), tmp=str(fake_tmp))) == sorted([str(lock), str(sock)])
    assert not lock.exists() and not sock.exists() and other.exists()
    assert desktop.recorded_display(home) is None
