"""The desktop in a pose workspace: SLEAP's and DeepLabCut's labelling GUIs, in the browser.

``jupyter-remote-desktop-proxy`` (in the pose image) adds "Desktop" to JupyterLab's launcher: TigerVNC with
XFCE, started inside the user's server when first opened, as the user, and reached only through the
server's own authentication (noVNC over the server's websocket; the VNC server listens on a Unix socket in
a folder only the user can enter, and on no TCP port). PoseHub gives it its session script
(:data:`XSTARTUP`, through :data:`XSTARTUP_ENV`), which records the display of this server's desktop and puts
SLEAP (``sleap-label``) and napari with ``napari-deeplabcut`` in the menu.

From a notebook, :func:`open_project` opens a labelling project (a SLEAP ``.slp``; a DeepLabCut project
folder, its ``config.yaml`` or one of its ``labeled-data`` folders) in the tool that reads it, on that desktop.
Drawing is software OpenGL (Mesa's llvmpipe: there is no GPU X server in a workspace); what the GUIs
compute (SLEAP's training and inference) runs on the profile's GPUs, whose ``CUDA_VISIBLE_DEVICES`` the
desktop inherits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

XSTARTUP_ENV = "JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP"  # read by jupyter-remote-desktop-proxy
HERE = Path(__file__).resolve().parent
XSTARTUP = HERE / "xstartup"
TOOLS = {"sleap": "SLEAP", "napari": "napari (DeepLabCut labelling)"}
NOT_RUNNING = ("Your desktop is not running: open it from JupyterLab's Launcher (Desktop, in a pose workspace), "
               "then try again.")


class DesktopError(RuntimeError):
    """The desktop cannot do what was asked; the message says why and what to do."""


def state_dir(home: str | Path | None = None) -> Path:
    return Path(home or os.path.expanduser("~")) / ".posehub" / "desktop"


def display_file(home: str | Path | None = None, server: str | None = None) -> Path:
    """Where this server's desktop session writes its X display (``xstartup``)."""
    server = server if server is not None else os.environ.get("JUPYTERHUB_SERVER_NAME", "")
    return state_dir(home) / f"{server or 'default'}.display"


def recorded_display(home: str | Path | None = None, server: str | None = None) -> str | None:
    """The display the desktop recorded (``:1``), or None; not checked (see :func:`display`)."""
    try:
        value = display_file(home, server).read_text().strip()
    except OSError:
        return None
    return value if value.startswith(":") and value[1:].replace(".", "").isdigit() else None


def _x_env(disp: str, home: str | Path | None = None) -> dict:
    env = {**os.environ, "DISPLAY": disp}
    if home is not None:  # the X authority (cookie) TigerVNC wrote for the display
        env["XAUTHORITY"] = str(Path(home) / ".Xauthority")
    return env


def display(home: str | Path | None = None) -> str:
    """The X display of this server's desktop, checked to answer (the user's X authority); DesktopError if the
    desktop is not running."""
    disp = recorded_display(home)
    if disp is None or not shutil.which("xdpyinfo"):
        raise DesktopError(NOT_RUNNING)
    r = subprocess.run(["xdpyinfo"], env=_x_env(disp, home), capture_output=True, timeout=20)
    if r.returncode != 0:
        raise DesktopError(NOT_RUNNING)
    return disp


def remove_leftovers(home: str | Path, uid: int, server: str | None = None, tmp: str = "/tmp") -> list[str]:
    """After a server ended (its processes killed with its control group): the X server's lock and socket files
    its desktop left in ``/tmp`` (``.X<n>-lock``, ``.X11-unix/X<n>``), removed when they are the user's own, so
    that display numbers do not run out on a machine that has stopped many desktops. Returns what was removed."""
    disp = recorded_display(home, server)
    if disp is None:
        return []
    n = disp[1:].split(".")[0]
    removed = []
    for path in (Path(tmp) / f".X{n}-lock", Path(tmp) / ".X11-unix" / f"X{n}"):
        try:
            if path.lstat().st_uid == uid:
                path.unlink()
                removed.append(str(path))
        except OSError:
            pass
    try:
        display_file(home, server).unlink()
    except OSError:
        pass
    return removed


def input_idle_seconds(home: str | Path | None = None) -> float | None:
    """Seconds since the last keyboard or mouse input on this server's desktop (X's screen saver extension,
    through ``xprintidle``); None when there is no desktop running."""
    disp = recorded_display(home)
    if disp is None or not shutil.which("xprintidle"):
        return None
    try:
        r = subprocess.run(["xprintidle"], env=_x_env(disp, home), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return int(r.stdout.strip()) / 1000 if r.returncode == 0 else None
    except ValueError:
        return None


def tool_for(path: str | Path) -> tuple[str, Path]:
    """Which tool opens ``path`` and what it is given: ``("sleap", file.slp)``, or ``("napari", folder)`` for a
    DeepLabCut project (its folder or ``config.yaml``: its first ``labeled-data`` folder; or one of those)."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise DesktopError(f"{path}: no such file or folder")
    if p.suffix == ".slp" and p.is_file():
        return "sleap", p
    if p.is_file() and p.name == "config.yaml":
        p = p.parent
    if p.is_dir() and (p / "labeled-data").is_dir():
        folders = sorted(d for d in (p / "labeled-data").iterdir() if d.is_dir())
        if not folders:
            raise DesktopError(f"{path}: this DeepLabCut project has no labeled-data/<video> folder to label")
        return "napari", folders[0]
    if p.is_dir() and p.parent.name == "labeled-data":
        return "napari", p
    raise DesktopError(f"{path}: not a labelling project PoseHub knows: a SLEAP .slp file, or a DeepLabCut project "
                       "(its folder, its config.yaml or a labeled-data/<video> folder)")


def command(tool: str, path: str | Path | None = None) -> list[str]:
    if tool not in TOOLS:
        raise DesktopError(f"unknown tool {tool!r}: one of {', '.join(TOOLS)}")
    return [sys.executable, "-m", "posehub.desktop.apps", tool] + ([str(path)] if path else [])


def launch(tool: str, path: str | Path | None = None, home: str | Path | None = None) -> subprocess.Popen:
    """Start ``tool`` on this server's desktop (its output in ``~/.posehub/desktop/<tool>.log``)."""
    cmd = command(tool, path)
    disp = display(home)
    log = state_dir(home) / f"{tool}.log"
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=_x_env(disp, home), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=os.path.expanduser("~"))


def open_project(path: str | Path) -> str:
    """Open a labelling project in the tool that reads it, on this server's desktop; a message saying so."""
    tool, target = tool_for(path)
    launch(tool, target)
    return (f"Opening {target} in {TOOLS[tool]} on your desktop: switch to the Desktop tab "
            f"(it takes a few seconds to appear).")


def open_sleap(path: str | Path | None = None) -> str:
    launch("sleap", path)
    return "Opening SLEAP on your desktop: switch to the Desktop tab."


def open_napari(path: str | Path | None = None) -> str:
    launch("napari", path)
    return "Opening napari (DeepLabCut labelling) on your desktop: switch to the Desktop tab."
