#!/usr/bin/env python3
"""Click-to-desktop benchmark: from clicking "Desktop" in JupyterLab's launcher to a drawn desktop.

The real `posehub up` (tests/hubfixture.py) with a pose profile, isolation on (run as root: the server runs as
the user's system account, in its control group). A user logs in in Chromium, starts the pose workspace and
waits for JupyterLab. Then, per round:

  cold: click "Desktop" in a server that has no desktop yet (TigerVNC and XFCE start): the time until noVNC
        says "Connected", and until the desktop is drawn (XFCE's panel is mapped on the user's display,
        checked with xdotool as the user, and the noVNC canvas is no longer one colour);
  warm: close that window and click "Desktop" again (the VNC server is running): the same two times.

Between rounds the server is stopped and started again, so that every cold round starts a new desktop.
Prints each time and the median per kind. No target: the figure goes in the README.

    .venv/bin/python bench/desktop.py [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from browser import browser, login  # noqa: E402
from hubfixture import Hub, base_config, process_env, server_processes, wait_for  # noqa: E402

PASSWORD = "bench-Quartz-7319"
USER = "deskbench"


def panel_mapped(hub: Hub) -> bool:
    f = hub.home(USER) / ".posehub" / "desktop" / "default.display"
    if not f.exists() or not server_processes(hub, USER):
        return False
    acct = pwd.getpwnam(hub.account(USER))
    env = {**process_env(server_processes(hub, USER)[0]), "DISPLAY": f.read_text().strip()}
    r = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "xfce4-panel"], env=env,
                       capture_output=True, user=acct.pw_uid, group=acct.pw_gid, timeout=20)
    return r.returncode == 0 and bool(r.stdout.strip())


CANVAS_DRAWN = """() => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width || !c.height) return false;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 4; i < d.length; i += 4 * 97) {
    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
  }
  return false;
}"""


def open_desktop(lab) -> tuple[object, float]:
    card = lab.locator(".jp-LauncherCard", has_text="Desktop")
    card.wait_for(timeout=60_000)
    t0 = time.perf_counter()
    with lab.expect_popup(timeout=60_000) as popup:
        card.click()
    return popup.value, t0


def measure(hub: Hub, lab) -> dict:
    desk, t0 = open_desktop(lab)
    desk.wait_for_function("document.getElementById('status')?.textContent === 'Connected'", timeout=180_000)
    connected = time.perf_counter() - t0
    wait_for(lambda: panel_mapped(hub), timeout=180, interval=0.1, what="XFCE's panel")
    desk.wait_for_function(CANVAS_DRAWN, timeout=60_000, polling=100)
    drawn = time.perf_counter() - t0
    return {"page": desk, "connected_s": round(connected, 2), "drawn_s": round(drawn, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="posehub-bench-desktop-"))
    cfg = base_config(tmp / "state")
    cfg["isolation"] = {"account_prefix": "phbench-"}
    cfg["images"]["pose"] = {"description": "SLEAP and DeepLabCut"}
    cfg["profiles"] = [{"slug": "pose-cpu", "display_name": "Pose (CPU)", "image": "pose", "cpu": 2,
                        "memory": "8G", "price_per_hour": 0.2}]
    hub = Hub(cfg, tmp).start()
    rows = []
    try:
        hub.create_user(USER, PASSWORD)
        with browser() as b:
            for i in range(args.rounds):
                lab = b.new_page(viewport={"width": 1280, "height": 860})
                login(lab, hub.url, USER, PASSWORD)
                if "/hub/spawn" in lab.url:
                    lab.check("#profile-pose-cpu")
                    lab.click("button[type=submit]")
                lab.wait_for_url(f"**/user/{USER}/lab**", timeout=300_000)
                lab.wait_for_selector(".jp-Launcher", timeout=300_000)
                cold = measure(hub, lab)
                cold["page"].close()
                warm = measure(hub, lab)
                warm["page"].close()
                row = {"round": i + 1, "cold_connected_s": cold["connected_s"], "cold_drawn_s": cold["drawn_s"],
                       "warm_connected_s": warm["connected_s"], "warm_drawn_s": warm["drawn_s"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                lab.close()
                hub.api("DELETE", f"/users/{USER}/server")
                wait_for(lambda: not server_processes(hub, USER), timeout=120, what="the server to stop")
    finally:
        hub.stop()
        subprocess.run(["pkill", "-KILL", "-u", hub.account(USER)], capture_output=True)
        subprocess.run(["userdel", hub.account(USER)], capture_output=True)
    summary = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "round"}
    print(f"click to drawn desktop, median of {len(rows)}: cold {summary['cold_drawn_s']:.1f} s "
          f"(connected {summary['cold_connected_s']:.1f} s), warm {summary['warm_drawn_s']:.1f} s "
          f"(connected {summary['warm_connected_s']:.1f} s); {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rows, "median": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
