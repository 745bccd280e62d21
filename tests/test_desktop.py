"""The desktop in a pose workspace (jupyter-remote-desktop-proxy, TigerVNC, XFCE) with SLEAP on it, in a real
browser; and that no one else can reach it.

alice starts a pose workspace, opens "Desktop" from JupyterLab's launcher (noVNC in a new window), and from her
notebook opens the labelling project made from an ensemble's ``label_next`` frames of the open-field data in
``sleap-label``: the test finds SLEAP's window on her X display (``xdotool``, as her account), not only a page.
bob, in a workspace of his own, tries her desktop's URL with his token, her VNC socket and her X display, and
every VNC and X port on the machine.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from browser import browser, login
from hubfixture import Hub, pose_config, process_env, server_processes, spawn_with_form, wait_for, wait_ready
from kernel import Kernel
from labelnext import openfield_ensemble
from test_isolation import PROBE, attempt, value

pytestmark = [pytest.mark.browser, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
POSE_PY = REPO / ".envs" / "pose" / "bin" / "python"
PASSWORD = "correct-horse-9"


class ThreadedKernel(Kernel):
    """Playwright's sync API holds an event loop in this thread while the browser is open: the kernel's websocket
    runs in a thread of its own."""

    def execute(self, code, timeout=60):
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(super().execute, code, timeout).result()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("desktop")
    cfg = pose_config(tmp / "state")
    hub = Hub(cfg, tmp).start()
    try:
        hub.create_user("alice", PASSWORD)
        hub.create_user("bob", PASSWORD)
        yield hub
    finally:
        hub.stop()
        print(f"\n----- hub log (last lines) -----\n{hub.log()[-5000:]}")


def account(hub: Hub, user: str) -> pwd.struct_passwd:
    return pwd.getpwnam(hub.account(user))


def as_user(hub: Hub, user: str, cmd: list[str], env: dict | None = None, timeout=60) -> subprocess.CompletedProcess:
    """``cmd`` run as the user's own account with their server's environment (as their terminal would)."""
    acct = account(hub, user)
    base = process_env(server_processes(hub, user)[0])
    return subprocess.run(cmd, env={**base, **(env or {})}, cwd=hub.home(user), capture_output=True, text=True,
                          timeout=timeout, user=acct.pw_uid, group=acct.pw_gid,
                          extra_groups=os.getgrouplist(acct.pw_name, acct.pw_gid))


def desktop_display(hub: Hub, user: str) -> str | None:
    f = hub.home(user) / ".posehub" / "desktop" / "default.display"
    return f.read_text().strip() if f.exists() else None


def windows(hub: Hub, user: str, name: str) -> list[str]:
    """Names of the windows matching ``name`` on the user's desktop (xdotool, as the user)."""
    disp = desktop_display(hub, user)
    if not disp:
        return []
    r = as_user(hub, user, ["xdotool", "search", "--name", name, "getwindowname", "%@"], {"DISPLAY": disp})
    return [ln for ln in r.stdout.splitlines() if ln.strip()] if r.returncode == 0 else []


def vnc_processes(hub: Hub, user: str) -> list[tuple[int, str]]:
    """(pid, command line) of the user's VNC servers (Xtigervnc), found through /proc."""
    uid = account(hub, user).pw_uid
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            owner = proc_uid(d)
        except OSError:
            continue
        if owner == uid and "Xtigervnc" in cmd.split(" ")[0]:
            out.append((int(d.name), cmd))
    return out


def proc_uid(d: Path) -> int:
    """The real uid of a process (its /proc folder may be root's: the server became the user after fork)."""
    for line in (d / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return -1


def user_processes(hub: Hub, user: str, needle: str) -> list[int]:
    uid = account(hub, user).pw_uid
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and proc_uid(d) == uid and \
                    needle in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                out.append(int(d.name))
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def alice_desktop(hub):
    """alice's pose workspace with its desktop opened from JupyterLab's launcher, in Chromium; yields the
    browser page of the desktop."""
    with browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 860})
        login(page, hub.url, "alice", PASSWORD)
        page.check("#profile-pose-cpu")
        page.click("button[type=submit]")
        page.wait_for_url("**/user/alice/lab**", timeout=300_000)
        page.wait_for_selector(".jp-Launcher", timeout=300_000)
        card = page.locator(".jp-LauncherCard", has_text="Desktop")
        card.wait_for(timeout=60_000)
        with page.expect_popup(timeout=60_000) as popup:
            card.click()
        desk = popup.value
        desk.set_viewport_size({"width": 1280, "height": 800})
        desk.wait_for_function("document.getElementById('status') && "
                               "document.getElementById('status').textContent === 'Connected'", timeout=120_000)
        yield {"page": desk, "lab": page}


def test_sleap_opens_a_label_next_project_on_alices_desktop(hub, alice_desktop):
    desk = alice_desktop["page"]
    assert re.search(r"/user/alice/desktop/$", desk.url), desk.url
    wait_for(lambda: desktop_display(hub, "alice"), timeout=60, what="alice's desktop to record its display")
    wait_for(lambda: windows(hub, "alice", "xfce4-panel"), timeout=90, what="XFCE's panel on alice's display")
    # the VNC server runs as alice, in her server's control group, listening on a Unix socket only
    [(pid, cmd)] = vnc_processes(hub, "alice")
    assert "-rfbport -1" in cmd and "-rfbunixpath" in cmd, cmd
    server = server_processes(hub, "alice")[0]
    assert Path(f"/proc/{pid}/cgroup").read_text() == Path(f"/proc/{server}/cgroup").read_text()

    # an ensemble's results of the open-field data, and the labelling project made from its label_next frames,
    # written and opened from alice's notebook
    home = hub.home("alice")
    results = openfield_ensemble(home / "ensembles" / "of-1", owner=account(hub, "alice"))
    kernel = ThreadedKernel.start(hub, "alice")
    r = kernel.execute(f"""
from posehub.pose.labelling import sleap_project
from posehub.desktop import open_project
slp = sleap_project({str(results)!r}, {str(home / "label-next" / "of-1.slp")!r}, top=10)
print(open_project(slp))
""", timeout=180)
    assert r.status == "ok" and not r.error, r
    assert "Opening" in r.stdout and "SLEAP" in r.stdout
    wait_for(lambda: [w for w in windows(hub, "alice", "SLEAP") if "of-1" in w or "SLEAP v" in w], timeout=180,
             interval=2, what="SLEAP's window on alice's display")
    found = windows(hub, "alice", "SLEAP")
    disp = desktop_display(hub, "alice")
    # fill the screen with SLEAP's window, and show its suggestions, for the screenshot
    as_user(hub, "alice", ["xdotool", "search", "--name", "SLEAP", "windowmove", "%@", "0", "0",
                           "windowsize", "%@", "1280", "760"], {"DISPLAY": disp})
    time.sleep(5)
    desk.mouse.click(947, 763)  # through noVNC, as a person would: SLEAP's "Labeling Suggestions" tab
    time.sleep(3)
    DOCS.mkdir(exist_ok=True)
    desk.screenshot(path=str(DOCS / "desktop-sleap.png"))
    assert any("SLEAP" in w for w in found), found
    # SLEAP runs as alice, with her server's GPUs (none in this CPU profile) and the desktop's menu of tools
    [sleap] = user_processes(hub, "alice", "desktop/apps.py sleap")  # python -m posehub.desktop.apps sleap
    server_env = process_env(server)
    assert process_env(sleap)["CUDA_VISIBLE_DEVICES"] == server_env["CUDA_VISIBLE_DEVICES"]
    [session] = [pid for pid in user_processes(hub, "alice", "xfce4-session")
                 if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"xfce4-session"]
    share = REPO / "extensions" / "posehub" / "desktop" / "share"
    assert process_env(session)["XDG_DATA_DIRS"].split(":")[0] == str(share)
    assert {p.name for p in (share / "applications").iterdir()} == {"posehub-sleap.desktop", "posehub-napari.desktop"}
    # nothing of it is readable by others: the desktop's state and X authority are alice's alone
    for p in (home / ".posehub" / "desktop", home / ".Xauthority"):
        st = p.stat()
        assert st.st_uid == account(hub, "alice").pw_uid and st.st_mode & 0o077 == 0, (p, oct(st.st_mode))


def test_napari_opens_a_deeplabcut_label_next_project(hub, alice_desktop):
    """The same frames as a DeepLabCut project, opened from alice's notebook in napari with napari-deeplabcut."""
    home = hub.home("alice")
    kernel = ThreadedKernel.start(hub, "alice")
    r = kernel.execute(f"""
from posehub.pose.labelling import dlc_project
from posehub.desktop import open_project
proj = dlc_project({str(home / "ensembles" / "of-1")!r}, {str(home / "label-next" / "of-1-dlc")!r}, top=5)
print(open_project(proj))
""", timeout=180)
    assert r.status == "ok" and not r.error, r
    assert "napari" in r.stdout
    wait_for(lambda: windows(hub, "alice", "napari: "), timeout=180, interval=2, what="napari's window on alice's display")
    [name] = windows(hub, "alice", "napari: ")
    assert name.startswith("napari: ") and "m3v1mp4" in name, name


def test_desktop_input_counts_as_activity(hub, alice_desktop):
    """Labelling on the desktop is one long websocket the server does not count: PoseHub's server extension asks
    the X server for the last input (xprintidle) and counts it as the server's activity."""
    disp = desktop_display(hub, "alice")
    as_user(hub, "alice", ["xdotool", "mousemove", "400", "300"], {"DISPLAY": disp})
    r = as_user(hub, "alice", ["xprintidle"], {"DISPLAY": disp})
    assert r.returncode == 0 and int(r.stdout) < 30_000, r
    code = """
import asyncio, datetime
from posehub.labidle import desktop_activity, DESKTOP_ACTIVITY
class App:  # the part of the server desktop_activity touches
    class web_app:
        settings = {}
asyncio.run(desktop_activity(App))
at = App.web_app.settings[DESKTOP_ACTIVITY]
print('@@' + str((datetime.datetime.now(datetime.timezone.utc) - at).total_seconds()))
"""
    r = as_user(hub, "alice", [str(POSE_PY), "-c", code])
    assert r.returncode == 0, r.stderr
    assert 0 <= float(r.stdout.split("@@")[-1]) < 60


def test_bob_cannot_reach_alices_desktop(hub, alice_desktop):
    """bob's token does not open alice's desktop page or its websocket; from his own server (his account) her
    VNC socket and her X display refuse him, and no VNC or X server listens on any TCP port."""
    [(vnc_pid, cmd)] = vnc_processes(hub, "alice")
    sock = cmd.split("-rfbunixpath ")[1].split(" ")[0]
    disp = desktop_display(hub, "alice")
    s = hub.session("bob", PASSWORD)
    assert spawn_with_form(hub, s, "cpu-small").status_code == 200
    wait_ready(hub, "bob", timeout=180)
    bob_token, alice_token = Kernel.token_for(hub, "bob"), Kernel.token_for(hub, "alice")

    def get(path, token):
        return requests.get(f"{hub.url}{path}", headers={"Authorization": f"token {token}"}, timeout=30,
                            allow_redirects=False).status_code

    assert get("/user/alice/desktop/", alice_token) == 200  # the test can fail: her own token opens it
    assert get("/user/alice/desktop/", bob_token) in (403, 404)
    assert get("/user/alice/desktop-websockify/", bob_token) in (403, 404)
    ws = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                         "-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
                         "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "-H", f"Authorization: token {bob_token}",
                         f"{hub.url}/user/alice/desktop-websockify/"], capture_output=True, text=True)
    assert ws.stdout in ("403", "404"), ws

    bob = ThreadedKernel.start(hub, "bob")
    bob.execute(PROBE)
    # her VNC socket: in a folder only she may enter
    got = attempt(bob, f"__import__('socket').socket(__import__('socket').AF_UNIX).connect({sock!r})")
    assert got["type"] == "PermissionError", got
    # her X display: its socket answers anyone, the X server does not (her cookie is in her private home)
    x = value(bob, f"__import__('subprocess').run(['xdpyinfo', '-display', {disp!r}], capture_output=True).returncode")
    assert x != 0
    mine = as_user(hub, "alice", ["xdpyinfo"], {"DISPLAY": disp})
    assert mine.returncode == 0, mine.stderr  # the check can fail: alice's own processes reach it
    # no VNC (5900-5999) or X (6000-6099) server listens on TCP, on any address
    open_ports = value(bob, """[p for p in list(range(5900, 6100)) if __import__('socket').socket().connect_ex(('127.0.0.1', p)) == 0]""",
                       timeout=120)
    assert open_ports == []
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    assert f"pid={vnc_pid}," not in listening, listening


def test_the_desktop_stops_with_the_server_and_its_settings_stay_in_alices_home(hub, alice_desktop):
    disp = desktop_display(hub, "alice")
    r = as_user(hub, "alice", ["xfconf-query", "-c", "xsettings", "-p", "/Gtk/FontName", "--create", "-t", "string",
                               "-s", "Sans 13"], {"DISPLAY": disp})
    assert r.returncode == 0, r.stderr
    saved = hub.home("alice") / ".config" / "xfce4" / "xfconf" / "xfce-perchannel-xml" / "xsettings.xml"
    # XFCE's settings daemon writes a change to the user's home a few seconds after it is made
    wait_for(lambda: saved.exists() and "Sans 13" in saved.read_text(), timeout=60, what="XFCE to save the setting")
    assert vnc_processes(hub, "alice")
    n = disp[1:]
    assert Path(f"/tmp/.X{n}-lock").exists()
    assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
    wait_for(lambda: not server_processes(hub, "alice"), timeout=120, what="alice's server to stop")
    wait_for(lambda: not vnc_processes(hub, "alice"), timeout=30, what="alice's VNC server to stop")
    # the X server was killed with the server's control group: the files it left in /tmp are removed too
    wait_for(lambda: not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists(),
             timeout=30, what="the desktop's X files to be removed")
    assert "Sans 13" in saved.read_text()  # kept in her home for the next desktop
    assert saved.stat().st_uid == account(hub, "alice").pw_uid
