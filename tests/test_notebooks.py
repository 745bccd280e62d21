"""Every example notebook, executed with its small settings inside a real PoseHub workspace.

A real hub starts alice's server with the pose profile (the `pose` image's
environment: SLEAP and DeepLabCut); each notebook then runs with nbclient in
that environment, with the server's own environment variables (its storage
manifest, its hub token), so it sees exactly what alice sees in JupyterLab:
the demo bucket holding DeepLabCut's open-field example, her home prefix, her
budget. The tests check what each notebook claims.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from browser import browser, login
from hubfixture import REPO, Hub, pose_config, process_env, server_processes, spawn_with_form, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.notebooks]
POSE_PY = REPO / ".envs" / "pose" / "bin" / "python"
NOTEBOOKS = REPO / "notebooks"
PASSWORD = "correct-horse-9"
DOCS = REPO / "docs"
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notebooks")
    cfg = pose_config(tmp / "state")
    cfg["buckets"]["demo_bucket"] = "openfield-demo"
    hub = Hub(cfg, tmp).start()
    try:
        hub.create_user("alice", PASSWORD)
        s = hub.session("alice", PASSWORD)
        assert spawn_with_form(hub, s, "pose-cpu").status_code == 200
        wait_ready(hub, "alice", timeout=300)
        (pid,) = server_processes(hub, "alice")
        home = hub.home("alice")
        account = pwd.getpwnam(hub.account("alice"))
        out = home / "notebook-runs"  # the notebooks run as alice's account, and write where she may
        out.mkdir()
        os.chown(out, account.pw_uid, account.pw_gid)
        yield {"hub": hub, "env": process_env(pid), "home": home, "out": out, "account": account}
    finally:
        hub.stop()
        print(f"\n----- hub log (last lines) -----\n{hub.log()[-5000:]}")


def run_notebook(ws, name: str, expect_fail: bool = False, **params):
    out = ws["out"] / name
    cmd = [str(POSE_PY), "-m", "posehub.notebooks", str(NOTEBOOKS / name), str(out)]
    for k, v in params.items():
        cmd += ["-p", f"{k}={json.dumps(v)}"]
    acct = ws["account"]  # as alice's own account, like her kernel
    r = subprocess.run(cmd, env=ws["env"], cwd=ws["home"], capture_output=True, text=True, timeout=1800,
                       user=acct.pw_uid, group=acct.pw_gid, extra_groups=os.getgrouplist(acct.pw_name, acct.pw_gid))
    if expect_fail:
        assert r.returncode != 0, f"{name} ran, but should have failed"
        return r
    assert r.returncode == 0, f"{name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    from posehub.notebooks import outputs_text

    nb = json.loads(out.read_text())  # nbformat 4 is JSON; the hub's environment has no nbformat
    return nb, outputs_text(nb)


def test_01_getting_started(workspace):
    nb, text = run_notebook(workspace, "01_getting_started.ipynb")
    assert "profile: pose-cpu" in text and "image:   pose" in text
    assert "GPUs:    none (a CPU profile)" in text
    assert "openfield-demo" in text and "home" in text  # the buckets table
    assert "116 labelled frames, 4 body parts: snout, leftear, rightear, tailbase" in text
    assert "written from notebook 01" in text
    assert (workspace["hub"].bucket("posehub-home") / "alice" / "hello-posehub.txt").exists()
    assert "Budget for 20" in text and "remaining $" in text
    assert any(o.get("data", {}).get("image/png") for c in nb["cells"] for o in c.get("outputs", []))  # the frame


def test_04_before_02_and_03_says_what_to_run(workspace):
    r = run_notebook(workspace, "04_compare.ipynb", expect_fail=True)
    assert "no run 'sleap-openfield' in your home bucket: run notebook 02 first" in r.stderr + r.stdout


def test_unknown_parameter_is_refused(workspace):
    r = run_notebook(workspace, "02_sleap.ipynb", expect_fail=True, epoch=1)
    assert r.returncode == 2
    assert "error: unknown parameter(s) epoch; this notebook takes:" in r.stderr


def _finite_per_bodypart(metrics):
    assert set(metrics["per_bodypart"]) == set(BODYPARTS)
    for bp, m in metrics["per_bodypart"].items():
        assert math.isfinite(m["mean_px"]) and m["mean_px"] >= 0, (bp, m)
        assert math.isfinite(m["rmse_px"]) and m["rmse_px"] >= m["mean_px"] - 1e-9, (bp, m)
    assert math.isfinite(metrics["all"]["mean_px"])


@pytest.mark.timeout(2400)  # trains both tools on two CPU cores: about 4 min here, more on a busy machine
def test_02_03_04_sleap_and_deeplabcut_compared(workspace):
    runs = workspace["hub"].bucket("posehub-home") / "alice" / "runs"
    _, text = run_notebook(workspace, "02_sleap.ipynb")
    assert "23 test frames: mean error" in text and "from scratch (random init)" in text
    sleap = json.loads((runs / "sleap-openfield" / "metrics.json").read_text())
    _finite_per_bodypart(sleap)
    rec = json.loads((runs / "sleap-openfield" / "run.json").read_text())
    assert rec["framework"] == "sleap" and rec["environment"]["image"] == "pose"
    assert rec["environment"]["packages"]["sleap-nn"] and len(rec["environment"]["lock_sha256"]) == 64
    assert len(rec["split"]["test_frames"]) == 23 and rec["inputs_sha256"]

    _, text = run_notebook(workspace, "03_deeplabcut.ipynb")
    dlc = json.loads((runs / "dlc-openfield" / "metrics.json").read_text())
    _finite_per_bodypart(dlc)
    rec = json.loads((runs / "dlc-openfield" / "run.json").read_text())
    # weights "auto": ImageNet's where the pose environment carries them (`make weights`), else random
    imagenet = (REPO / ".envs" / "pose" / "share" / "posehub" / "weights" / "resnet50_gn.a1h_in1k.safetensors").is_file()
    assert rec["framework"] == "dlc"
    assert rec["weights"].startswith("imagenet (resnet50_gn.a1h_in1k") if imagenet else rec["weights"] == "scratch (random init)"
    assert rec["environment"]["packages"]["deeplabcut"].startswith("3.0")

    nb, text = run_notebook(workspace, "04_compare.ipynb")
    assert "both tools tested on the same 23 held-out frames" in text
    table = next("".join(o["data"]["text/plain"]) for c in nb["cells"] for o in c.get("outputs", [])
                 if "RMSE (px)" in "".join(o.get("data", {}).get("text/plain", "")))
    assert "SLEAP (U-Net)" in table and "DeepLabCut (ResNet-50)" in table and "1.96" in table and "3.44" in table
    assert "video frames of" in text


def test_compared_results_in_jupyterlab(workspace):
    """The executed comparison notebook as alice sees it in JupyterLab (the README's screenshot)."""
    done = workspace["out"] / "04_compare.ipynb"
    if not done.exists():
        pytest.fail("notebook 04 has not run (test_02_03_04_sleap_and_deeplabcut_compared failed?)")
    copy = workspace["home"] / "04_compare.ipynb"
    copy.write_bytes(done.read_bytes())
    os.chown(copy, workspace["account"].pw_uid, workspace["account"].pw_gid)
    hub = workspace["hub"]
    with browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 1000})
        login(page, hub.url, "alice", PASSWORD)
        page.goto(f"{hub.url}/user/alice/lab/tree/04_compare.ipynb")
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        page.wait_for_selector(".jp-OutputArea-output table", timeout=60_000)  # the comparison table
        assert "DeepLabCut (ResNet-50)" in page.locator(".jp-OutputArea-output table").first.inner_text()
        page.locator(".jp-OutputArea-output table").first.scroll_into_view_if_needed()
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / "notebook-compare.png"))


def test_05_ensemble_widget_builds_headless(workspace):
    """Notebook 05 without a browser: the widget is built (labels found in the demo bucket, the budget read);
    the training itself is clicked through in JupyterLab by tests/test_dask_gateway.py."""
    nb, text = run_notebook(workspace, "05_ensemble.ipynb")
    assert "Budget for 20" in text
    assert "worker profiles you may use: []" in text  # this test hub runs no Dask Gateway
    assert "Train the ensemble with the widget above first" in text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for c in nb["cells"]
               for o in c.get("outputs", []))


def test_06_my_costs(workspace):
    _, text = run_notebook(workspace, "06_my_costs.ipynb")
    assert "Period 20" in text and "% used" in text
    assert "pose-cpu" in text  # the profile alice has been running
    assert "Forecast: $" in text


CLIPS_07 = ["openfield_0000-0029", "openfield_1150-1179", "openfield_2300-2329"]  # 3 clips of 30 frames


@pytest.mark.timeout(1500)  # trains a tiny SLEAP model first when notebook 02 has not run; then about a minute
def test_07_analyze_videos(workspace):
    """Notebook 07: clips of the open-field video analysed in chunks on a Dask cluster (a local one: this test
    hub runs no Dask Gateway) with notebook 02's model when test_02_03_04 ran first, else a tiny one it trains."""
    r = run_notebook(workspace, "07_analyze_videos.ipynb", expect_fail=True, model="/nowhere/run")
    assert "model /nowhere/run: not a PoseHub run folder" in r.stderr + r.stdout
    assert "run 02_sleap first or set model=..." in r.stderr + r.stdout

    nb, text = run_notebook(workspace, "07_analyze_videos.ipynb")
    assert ("model: notebook 02's SLEAP run" in text or "so a tiny SLEAP model was trained" in text
            or "the tiny SLEAP model trained here before" in text)
    assert "Estimate: 90 frames of 3 video(s) in 6 chunk(s) on 2 CPU worker(s)" in text
    assert "this workspace has no Dask Gateway" in text and "local Dask cluster of 2 worker process(es)" in text
    assert "6/6 chunks, 90/90 frames" in text and "the cluster is shut down" in text

    clips = workspace["hub"].bucket("posehub-home") / "alice" / "analyze-clips"
    assert sorted(p.stem for p in clips.glob("*.mp4")) == CLIPS_07
    for stem in CLIPS_07:
        for name in (f"{stem}.posehub.csv", f"{stem}.predictions.slp", f"{stem}.analysis.json"):
            assert (clips / name).is_file() and (clips / name).stat().st_size > 0, name
        with open(clips / f"{stem}.posehub.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 30 * len(BODYPARTS)  # one row per frame and body part
        assert sorted({int(r["frame"]) for r in rows}) == list(range(30))
        assert {r["bodypart"] for r in rows} == set(BODYPARTS)
        assert all(r["confidence"] and math.isfinite(float(r["confidence"])) for r in rows)
        assert any(r["x"] for r in rows)  # the model placed body parts
        rec = json.loads((clips / f"{stem}.analysis.json").read_text())
        assert rec["frames"] == 30 and rec["video"]["frames"] == 30 and len(rec["video"]["sha256"]) == 64
        assert math.isfinite(rec["mean_confidence"]) and 0 <= rec["low_confidence"]["share"] <= 1
        assert [(c["start"], c["stop"]) for c in rec["chunks"]] == [(0, 16), (16, 30)]
        assert rec["model"]["framework"] == "sleap" and rec["model"]["folder"].endswith(("runs/sleap-openfield",
                                                                                          "runs/sleap-openfield-tiny"))

    # the results table: one row per clip, every clip done with its 30 frames
    html = next("".join(o["data"]["text/html"]) for c in nb["cells"] for o in c.get("outputs", [])
                if "low-confidence share" in "".join(o.get("data", {}).get("text/html", "")))
    assert html.count("<th>openfield_") == len(CLIPS_07) and all(f"<th>{s}.mp4</th>" in html for s in CLIPS_07)
    assert html.count("<td>done</td>") == len(CLIPS_07) and html.count("<td>30</td>") == len(CLIPS_07)

    figure = clips / "trajectories.png"
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    assert "figure saved to /" in text and any(o.get("data", {}).get("image/png") for c in nb["cells"]
                                                for o in c.get("outputs", []))
