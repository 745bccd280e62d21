"""Dask Gateway as the hub runs it: real hub, real gateway, real schedulers and workers on loopback.

Clients are the `dask_gateway` client of the pose image's environment, with the
environment of alice's real server (its hub token, its DASK_GATEWAY__* settings),
so they see what a notebook sees. What is checked: the worker profiles a user
is offered (access rules), clusters that start and run work in the profile's
environment with its resources, the limits per user, the budget refusal, the
ledger's `dask-worker` spans, and the cost enforcer stopping a cluster at the cap. The ensemble widget's
"Analyse videos" tab runs in alice's real Jupyter kernel (as her account, as a notebook would).
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import stat
import subprocess
import tempfile
from pathlib import Path
import textwrap
from decimal import Decimal

import pytest
import requests
from playwright.sync_api import expect

from browser import browser, login
from hubfixture import REPO, Hub, base_config, free_port, process_env, server_processes, spawn_with_form, wait_for, wait_ready
from kernel import Kernel

from cost_reports.core import CostReporter
from posehub.config import load
from posehub.hub import accounts

pytestmark = [pytest.mark.slow]
POSE_PY = REPO / ".envs" / "pose" / "bin" / "python"
PASSWORD = "correct-horse-9"
DOCS = REPO / "docs"
# a SLEAP member in seconds on a CPU: errors are large, the mechanics are what is tested
TINY = {"epochs": 2, "scale": 0.25, "filters": 4, "max_stride": 8, "batch_size": 4, "augment": False}
ENSEMBLE = f"""
    import os, signal, time
    from posehub import storage
    from posehub.pose import load_labels
    from posehub.ensemble import train_ensemble
    labels = load_labels(storage.url("openfield-demo", "labeled-data/m4s1/CollectedData_Pranav.csv"),
                         fs=storage.filesystem("openfield-demo")).subset(range(0, 116, 5))
    TINY = {TINY!r}

    def wait_for(cond, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.2)
        raise TimeoutError(f"{{what}}: {{ens.progress}}\\n" + "\\n".join(ens.log_tail(30)))

    def training(i, epoch=1):
        p = ens.progress[i]
        return p["state"] == "running" and p["phase"] == "training" and p["pid"] and (p["epoch"] or 0) >= epoch
"""


def dask_config(tmp) -> dict:
    cfg = base_config(tmp / "state")
    cfg["images"]["pose"] = {"description": "SLEAP and DeepLabCut"}
    cfg["profiles"] += [
        {"slug": "pose-cpu", "display_name": "Pose (CPU)", "image": "pose", "cpu": 1, "memory": "2G",
         "price_per_hour": 0.2},
        {"slug": "gpu-staff", "display_name": "One GPU", "image": "pose", "cpu": 1, "memory": "2G", "gpus": 1,
         "price_per_hour": 1.0, "allowed_groups": ["staff"]},
    ]
    cfg["gpus"] = {"devices": [0, 1]}  # declared: this machine has none, so the indices are only handed out
    cfg["groups"]["staff"]["users"].append("tess")
    cfg["dask"].update({"enabled": True, "worker_profiles": ["pose-cpu", "gpu-staff"], "meter_interval_seconds": 1,
                        "max_clusters_per_user": 1, "max_workers_per_user": 3, "max_gpus_per_user": 2})
    cfg["buckets"]["demo_bucket"] = "openfield-demo"  # DeepLabCut's open-field example, copied by `posehub up`
    cfg["costs"]["check_interval_seconds"] = 2
    return cfg


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    if not POSE_PY.exists():
        pytest.fail(f"the pose image's environment is not built ({POSE_PY}): `make test` builds it")
    tmp = tmp_path_factory.mktemp("dask")
    hub = Hub(dask_config(tmp), tmp).start()
    try:
        hub.create_user("alice", PASSWORD)
        hub.create_user("bob", PASSWORD)
        hub.session("bob", PASSWORD)  # signed in once: only then does the hub know bob
        s = hub.session("alice", PASSWORD)
        assert spawn_with_form(hub, s, "pose-cpu").status_code == 200
        wait_ready(hub, "alice", timeout=300)
        (pid,) = server_processes(hub, "alice")
        env = process_env(pid)
        wait_for(lambda: requests.get(env["DASK_GATEWAY__ADDRESS"] + "/api/health", timeout=5).ok, timeout=60,
                 what="Dask Gateway")
        yield {"hub": hub, "env": env}
    finally:
        hub.stop()
        print(f"\n----- hub log (last lines) -----\n{hub.log()[-6000:]}")


def with_ensemble(code: str) -> str:
    return textwrap.dedent(ENSEMBLE) + textwrap.dedent(code)


def client(ws, code: str, token: str | None = None, timeout=300) -> dict:
    """Run ``code`` with the dask_gateway client in the pose environment; it sets ``out`` (JSON)."""
    env = dict(ws["env"])
    if token:
        env["JUPYTERHUB_API_TOKEN"] = token
    script = f"import faulthandler\nfaulthandler.dump_traceback_later({timeout - 15}, exit=True)\n" \
             "import json, sys\nfrom dask_gateway import Gateway\ngateway = Gateway()\nout = {}\n" \
             + textwrap.dedent(code) + "\nprint('OUT=' + json.dumps(out))\n"
    r = subprocess.run([str(POSE_PY), "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("OUT=")]
    assert r.returncode == 0 and lines, f"client failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return json.loads(lines[-1][4:])


def refused(ws, options: str, token: str | None = None) -> str:
    """The error a user gets for ``gateway.new_cluster(<options>)``."""
    out = client(ws, f"""
        try:
            c = gateway.new_cluster({options})
            out["error"] = ""
            c.shutdown()
        except Exception as e:
            out["error"] = f"{{type(e).__name__}}: {{e}}"
    """, token)
    return out["error"]


def user_token(hub: Hub, user: str) -> str:
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "test", "expires_in": 1200})
    r.raise_for_status()
    return r.json()["token"]


def cost_api(hub: Hub, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{hub.url}/services/cost/api/{path}",
                            headers={"Authorization": f"token {hub.api_token()}"}, timeout=30, **kw)


def ledger(hub: Hub):
    return CostReporter(load(hub.config_file)).ledger


def worker_spans(hub: Hub, user: str, open_only=True):
    spans = ledger(hub).open_spans(user, kind="dask-worker") if open_only else \
        [s for s in ledger(hub).spans(CostReporter(load(hub.config_file)).period(), user) if s.kind == "dask-worker"]
    return spans


# ---------------------------------------------------------------- tests


def test_offered_worker_profiles_follow_access_rules(gw):
    out = client(gw, """
        opts = gateway.cluster_options()
        out["field"] = list(opts)
        out["choices"] = opts._fields["profile"].options
        out["default"] = opts.profile
    """)
    assert out["field"] == ["profile"]
    assert out["choices"] == ["pose-cpu"]  # gpu-staff is for the staff group; cpu-* are not worker profiles
    assert out["default"] == "pose-cpu"


@pytest.mark.parametrize("options, message", [
    ("profile='gpu-staff'", "Worker profile 'gpu-staff' is not open to you. Profiles you may use: pose-cpu. "
                            "Ask help@lab.example for access."),
    ("profile='tpu'", "Unknown worker profile 'tpu'. Profiles you may use: pose-cpu."),
])
def test_bad_profiles_are_refused_with_a_clear_message(gw, options, message):
    assert message in refused(gw, options)
    assert client(gw, "out['n'] = len(gateway.list_clusters())")["n"] == 0


def check_cluster_isolation(gw, out: dict) -> None:
    """Alice's cluster: its scheduler and workers run as her account, each worker in a control group with its
    profile's limits; its folder (TLS key, logs) is hers alone; bob can neither read the key nor attach."""
    hub = gw["hub"]
    assert out["uid"] == out["scheduler_uid"] == pwd.getpwnam(hub.account("alice")).pw_uid
    memory = next(line.split(":", 2)[2] for line in out["cgroup"].splitlines() if ":memory:" in line)
    assert f"-{out['name']}-worker-" in memory
    assert Path(f"/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes").read_text().strip() == str(2 * 2**30)
    cluster_dir = hub.data_dir / "dask-clusters" / out["name"]  # the cluster's TLS key and logs: alice's alone
    assert cluster_dir.stat().st_uid == out["uid"] and stat.S_IMODE(cluster_dir.stat().st_mode) == 0o700
    key = cluster_dir / ".certs" / "dask.pem"
    assert key.stat().st_uid == out["uid"] and stat.S_IMODE(key.stat().st_mode) == 0o600
    # bob cannot read alice's cluster key, nor attach to her cluster with his own token
    bob = accounts.ensure_account("bob", prefix=hub.config["isolation"]["account_prefix"], group="posehub-users",
                                  homes_dir=hub.data_dir / "homes")  # as his first spawn would
    r = subprocess.run(["cat", str(key)], user=bob.uid, group=bob.gid, extra_groups=list(bob.groups),
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    attach = client(gw, f"""
        try:
            gateway.connect({out['name']!r})
            out["error"] = ""
        except Exception as e:
            out["error"] = f"{{type(e).__name__}}: {{e}}"
    """, token=user_token(hub, "bob"))
    assert attach["error"].startswith("ClientResponseError: 403, message='Forbidden'") and out["name"] in attach["error"]


def test_a_cluster_runs_in_the_profile_environment_and_is_metered(gw):
    hub = gw["hub"]
    out = client(gw, """
        import os
        cluster = gateway.connect(gateway.submit(profile="pose-cpu"))  # outlives this script: stopped below
        out["name"] = cluster.name
        cluster.scale(1)
        c = cluster.get_client()
        c.wait_for_workers(1, timeout=120)
        info = c.scheduler_info()
        out["resources"] = [w["resources"] for w in info["workers"].values()]
        out["prefix"] = c.submit(lambda: sys.prefix).result()
        out["sum"] = c.submit(sum, [1, 2, 3]).result()
        out["uid"] = c.submit(os.getuid).result()
        out["cgroup"] = c.submit(lambda: open("/proc/self/cgroup").read()).result()
        out["scheduler_uid"] = c.run_on_scheduler(os.getuid)
        # one cluster at a time (dask.max_clusters_per_user: 1)
        try:  # (submit: a GatewayCluster that failed to start can deadlock the client when collected)
            gateway.submit(profile="pose-cpu")
            out["second"] = ""
        except Exception as e:
            out["second"] = str(e)
        # scaling past the per-user worker limit is capped, with the gateway's message
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cluster.scale(5)
        out["scale_warning"] = " ".join(str(x.message) for x in w)
        cluster.scale(1)
        import time; time.sleep(3)  # the meter (every 1 s here) writes the worker's span
        out["listed"] = [x.name for x in gateway.list_clusters()]
        c.close()
    """)
    assert out["resources"] == [{"member": 1.0}] or out["resources"] == [{"member": 1}]
    assert out["prefix"] == str(REPO / ".envs" / "pose")
    assert out["sum"] == 6
    try:
        check_cluster_isolation(gw, out)
    except BaseException:
        client(gw, f"gateway.stop_cluster({out['name']!r}); out['ok'] = True")
        raise
    assert "You already run 1 Dask cluster(s), the most you may run at once is 1" in out["second"]
    assert "would exceed resource limit of 3 workers" in out["scale_warning"]
    assert out["listed"] == [out["name"]]
    spans = wait_for(lambda: worker_spans(hub, "alice"), timeout=30, what="an open dask-worker span")
    assert {s.resource_id.split("/")[0] for s in spans} == {out["name"]}
    assert all(s.profile == "pose-cpu" and s.rate == Decimal("0.2") for s in spans)
    client(gw, f"gateway.stop_cluster({out['name']!r}); out['ok'] = True")
    wait_for(lambda: not worker_spans(hub, "alice"), timeout=60, what="the worker spans to close")
    closed = worker_spans(hub, "alice", open_only=False)
    assert closed and all(s.end is not None and s.end > s.start for s in closed)
    assert hub.api("GET", "/users/alice").json()["servers"][""]["ready"]  # the server is untouched


def test_a_cluster_over_budget_is_refused(gw):
    hub = gw["hub"]
    assert cost_api(hub, "PUT", "budgets/user/alice", json={"amount": 0.05, "reason": "test"}).ok
    try:
        msg = refused(gw, "profile='pose-cpu'")
    finally:
        assert cost_api(hub, "DELETE", "budgets/user/alice?reason=test").ok
    assert "Not enough budget to start a Dask cluster of 'Pose (CPU)' workers: one worker needs $0.20 " \
           "for a first block of 1 h at $0.20/h, and you have $" in msg
    assert " left of $0.05 for " in msg
    assert "ask help@lab.example for more budget" in msg
    assert client(gw, "out['n'] = len(gateway.list_clusters())")["n"] == 0


def test_the_enforcer_stops_a_cluster_at_the_cap(gw):
    hub = gw["hub"]
    bob = user_token(hub, "bob")  # bob has no server: only his cluster can be stopped
    out = client(gw, """
        cluster = gateway.connect(gateway.submit(profile="pose-cpu"))  # outlives this script
        cluster.scale(1)
        c = cluster.get_client()
        c.wait_for_workers(1, timeout=120)
        out["name"] = cluster.name
        c.close()
    """, token=bob)
    wait_for(lambda: worker_spans(hub, "bob"), timeout=30, what="bob's worker span")
    assert cost_api(hub, "PUT", "budgets/user/bob", json={"amount": 0, "reason": "used up"}).ok
    try:
        wait_for(lambda: not client(gw, "out['n'] = [c.name for c in gateway.list_clusters()]", token=bob)["n"],
                 timeout=90, interval=2, what="the enforcer to stop bob's cluster")
        wait_for(lambda: not worker_spans(hub, "bob"), timeout=30, what="bob's worker span to close")
        assert f"stopping bob's Dask cluster {out['name']}" in hub.log()
    finally:
        assert cost_api(hub, "DELETE", "budgets/user/bob?reason=test").ok


def test_gpu_workers_and_servers_share_the_machines_gpus(gw):
    """One pool for the hub's servers and the gateway's workers (``<state_dir>/gpus.json``): sam's GPU server
    holds GPU 0, so his GPU cluster is capped at the one GPU left and its worker gets GPU 1 alone; tess is then
    refused with the reason; each GPU comes back when its holder stops. The machine has no GPU: the two are
    declared in gpus.devices, and what is checked is which index each process is given."""
    hub = gw["hub"]
    nodes = Path(tempfile.mkdtemp(dir="/tmp"))  # stand-ins for /dev/nvidia0 and /dev/nvidia1 (NVIDIA's major, 195)
    os.chmod(nodes, 0o755)
    for n in (0, 1):
        os.mknod(nodes / f"nvidia{n}", 0o666 | stat.S_IFCHR, os.makedev(195, n))
        os.chmod(nodes / f"nvidia{n}", 0o666)  # (mknod's mode goes through the umask)

    def owners():
        f = hub.state_dir / "gpus.json"
        return json.loads(f.read_text())["owners"] if f.exists() else {}

    hub.create_user("sam", PASSWORD)
    hub.create_user("tess", PASSWORD)
    hub.session("tess", PASSWORD)
    assert spawn_with_form(hub, hub.session("sam", PASSWORD), "gpu-staff").status_code == 200
    wait_ready(hub, "sam", timeout=300)
    (pid,) = server_processes(hub, "sam")
    assert process_env(pid)["CUDA_VISIBLE_DEVICES"] == "0" and owners() == {"0": "server:sam/"}
    sam = user_token(hub, "sam")
    out = client(gw, """
        import os, warnings
        cluster = gateway.connect(gateway.submit(profile="gpu-staff"))  # outlives this script: stopped below
        out["name"] = cluster.name
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cluster.scale(2)
        out["scale_warning"] = " ".join(str(x.message) for x in w)
        c = cluster.get_client()
        c.wait_for_workers(1, timeout=120)
        out["visible"] = sorted(c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).values())

        def opening(path):
            try:
                os.close(os.open(path, os.O_RDWR))
                return 0
            except OSError as e:
                return e.errno
        out["open"] = [c.submit(opening, f"{NODES}/nvidia{n}", resources={"GPU": 1}, pure=False).result()
                       for n in (0, 1)]
        out["resources"] = [w["resources"] for w in c.scheduler_info()["workers"].values()]
        c.close()
    """.replace("{NODES}", str(nodes)), token=sam)
    try:
        assert "would exceed resource limit of 1 workers" in out["scale_warning"]  # 1 GPU free at the start
        assert out["visible"] == ["1"] and out["resources"] in ([{"GPU": 1}], [{"GPU": 1.0}])
        # the worker given GPU 1 may open only /dev/nvidia1 (no driver here: ENXIO), not sam's server's GPU 0
        assert out["open"][0] == errno.EPERM and out["open"][1] not in (0, errno.EPERM)
        held = owners()
        assert held["0"] == "server:sam/" and held["1"].startswith(f"dask:{out['name']}/")
        msg = refused(gw, "profile='gpu-staff'", token=user_token(hub, "tess"))
        assert "Workers of 'One GPU' need 1 GPU(s) each and 0 of this machine's 2 GPU(s) are free (the others " \
               "are held by JupyterLab servers and Dask workers). Try again when one is released" in msg
    finally:
        client(gw, f"gateway.stop_cluster({out['name']!r}); out['ok'] = True", token=sam)
    wait_for(lambda: owners() == {"0": "server:sam/"}, timeout=60, what="the worker's GPU to come back")
    assert hub.api("DELETE", "/users/sam/server").status_code in (202, 204)
    wait_for(lambda: owners() == {}, timeout=60, what="the server's GPU to come back")


# ---------------------------------------------------------------- ensembles on the gateway's workers


def test_ensemble_of_three_with_a_worker_killed_mid_training(gw):
    """Three SLEAP members on three gateway workers; member 0's worker is killed while it trains: the
    scheduler runs the member again (on another worker, or the one the nanny restarts), the others go on."""
    out = client(gw, with_ensemble("""
        cluster = gateway.new_cluster(profile="pose-cpu")
        cluster.scale(3)
        c = cluster.get_client()
        c.wait_for_workers(3, timeout=180)
        video = storage.url("openfield-demo", "videos/m3v1mp4.mp4")
        ens = train_ensemble(labels, "sleap", members=3, config={**TINY, "epochs": 6}, client=c,
                             video=video, video_fs=storage.filesystem("openfield-demo"), video_frames=3)
        out["resources"] = ens.resources
        wait_for(lambda: training(0), 240, "member 0 training")
        victim = ens.progress[0]["worker"]
        os.kill(c.run(os.getpid)[victim], signal.SIGKILL)
        out["killed"] = victim
        assert ens.wait(600), f"not done: {ens.progress}"
        r = ens.results()
        out["progress"] = ens.progress
        out["table"] = r.table().to_dict(orient="index")
        out["label_next"] = r.label_next[:5]
        out["method"] = r.method
        out["files"] = sorted(r.files)
        out["dest"] = ens.spec.dest
        cluster.shutdown()
    """), timeout=900)
    assert out["resources"] == {"member": 1}
    p = out["progress"]
    assert [m["state"] for m in p] == ["done", "done", "done"], p
    assert p[0]["attempt"] >= 2 and p[0]["worker"] != out["killed"] or p[0]["attempt"] >= 2
    assert all(m["attempt"] == 1 for m in p[1:]), p
    table = out["table"]
    assert list(table) == ["member 0", "member 1", "member 2", "consensus"]
    assert all(table[k]["mean px"] >= 0 for k in table)  # finite numbers (JSON has no NaN here)
    assert out["label_next"] and {"rank", "frame", "score_px", "source"} <= set(out["label_next"][0])
    assert out["method"] == "confmaps"  # SLEAP members' confidence maps, averaged
    home = gw["hub"].bucket("posehub-home") / "alice"
    dest = Path(out["dest"])
    folder = dest if dest.is_absolute() else home / out["dest"]
    assert (folder / "ensemble.json").exists() and (folder / "label_next.csv").exists()
    assert all((folder / f"member-{i}" / "metrics.json").exists() for i in range(3))


def test_ensemble_cancel_stops_every_training_process(gw):
    out = client(gw, with_ensemble("""
        import psutil
        cluster = gateway.new_cluster(profile="pose-cpu")
        cluster.scale(2)
        c = cluster.get_client()
        c.wait_for_workers(2, timeout=180)
        ens = train_ensemble(labels, "sleap", members=2, config={**TINY, "epochs": 500}, client=c)
        wait_for(lambda: training(0) and training(1), 240, "two members training")
        pids = [m["pid"] for m in ens.progress]
        t = time.monotonic()
        out["confirmed"] = ens.cancel(timeout=30)
        out["cancel_s"] = time.monotonic() - t
        time.sleep(1)
        out["alive"] = [psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids]
        out["states"] = [m["state"] for m in ens.progress]
        cluster.shutdown()
    """), timeout=600)
    assert out["confirmed"] and out["alive"] == [False, False]
    assert out["states"] == ["cancelled", "cancelled"]


def test_bad_ensemble_input_fails_before_any_worker_starts(gw):
    out = client(gw, with_ensemble("""
        from posehub.ensemble import EnsembleError
        errors = []
        for kwargs in [dict(labels="s3://nowhere/CollectedData_x.csv", framework="sleap", members=2),
                       dict(labels=labels, framework="openpose", members=2),
                       dict(labels=labels, framework="sleap", members=0)]:
            try:
                train_ensemble(**kwargs)  # no client, no cluster: the checks come first
                errors.append("")
            except EnsembleError as e:
                errors.append(str(e))
        out["errors"] = errors
        out["clusters"] = len(gateway.list_clusters())
    """))
    missing, framework, members = out["errors"]
    assert "nowhere" in missing
    assert "openpose" in framework and "sleap" in framework and "dlc" in framework
    assert "members must be" in members and ">= 1" in members
    assert out["clusters"] == 0


def test_the_widget_trains_an_ensemble_in_jupyterlab(gw):
    """Notebook 05 as alice sees it: the widget in JupyterLab, in Chromium; she submits 2 members and
    gets the table of members vs consensus; the Analyse videos tab then offers the ensemble's folder as its model."""
    hub = gw["hub"]
    home = hub.home("alice")
    nb = json.loads((REPO / "notebooks" / "05_ensemble.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = 'framework = "sleap"\nmembers = 2\nepochs = 2\nscale = 0.25\nfilters = 4\nvideo_frames = 2\n'
    (home / "05_ensemble.ipynb").write_text(json.dumps(nb))
    with browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 1400})
        login(page, hub.url, "alice", PASSWORD)
        page.goto(f"{hub.url}/user/alice/lab/tree/05_ensemble.ipynb")
        page.wait_for_selector(".jp-Notebook", timeout=120_000)
        page.wait_for_timeout(3000)  # the kernel starting
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_selector(".posehub-ens-submit", timeout=180_000)
        except Exception:
            page.screenshot(path=str(hub.workdir / "widget-missing.png"), full_page=True)
            raise AssertionError("no widget; the page says:\n" + page.inner_text("body")[-4000:]) from None
        estimate = page.locator(".posehub-ens-estimate").inner_text()
        assert estimate.startswith("Estimate: about") and "worker-hour" in estimate
        assert "Budget for" in page.locator(".posehub-ens-budget").inner_text()
        assert "Pose (CPU) (1 CPU" in page.locator(".posehub-ens-profile select").inner_text().replace("\xa0", " ")
        page.locator(".posehub-ens-submit").click()
        page.wait_for_selector(".posehub-ens-bar", timeout=180_000)
        page.wait_for_selector(".posehub-ens-results", timeout=900_000)
        text = page.locator(".posehub-ens-results").inner_text()
        assert "member 0" in text and "member 1" in text and "consensus" in text
        expect(page.locator(".posehub-ens-message")).to_contain_text("Done: consensus of 2 member(s)", timeout=60_000)
        expect(page.locator(".posehub-ens-cost")).to_contain_text("so far")
        expect(page.locator(".posehub-ens-plot")).to_be_visible()
        page.locator(".posehub-ens-results").scroll_into_view_if_needed()
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / "ensemble-widget.png"), full_page=True)
        # the frames to label next, as a SLEAP project, from the widget's button
        page.locator(".posehub-ens-label-next").click()
        status = page.locator(".posehub-ens-label-status")
        expect(status).to_contain_text("frame(s) to label next", timeout=180_000)
        written = re.search(r"as a SLEAP \.slp: (\S+\.slp)", status.inner_text())
        assert written, status.inner_text()
        slp = Path(written.group(1))
        assert slp.is_file() and slp.stat().st_uid == pwd.getpwnam(hub.account("alice")).pw_uid
        page.locator(".posehub-ens-open-desktop").click()  # this workspace has not opened its desktop
        expect(status).to_contain_text("Your desktop is not running: open it from JupyterLab's Launcher")
        # the Analyse videos tab: the model field holds the ensemble's folder (its members' consensus)
        page.locator(".posehub-ens .lm-TabBar-tab", has_text="Analyse videos").click()
        expect(page.locator(".posehub-ana-model input")).to_have_value(re.compile(r"/ensembles/[^/]+$"))
        expect(page.locator(".posehub-ana-model-note")).to_contain_text("finished member(s) and their consensus")
        expect(page.locator(".posehub-ana-estimate-button")).to_be_visible()
        expect(page.locator(".posehub-ana-watch-message")).not_to_be_empty()  # the watches, or why there are none
    wait_for(lambda: not client(gw, "out['n'] = len(gateway.list_clusters())")["n"], timeout=60,
             what="the widget's cluster to shut down")


def test_analysis_of_three_clips_with_a_worker_killed(gw):
    """posehub.analyze on two gateway workers (alice's account, the pose-cpu profile): three clips cut from the
    open-field video in chunks, one worker killed while it predicts: every clip finishes, each chunk once, and the
    predictions equal the same model's in one process, frame by frame."""
    home = gw["hub"].home("alice")
    uid = pwd.getpwnam(gw["hub"].account("alice")).pw_uid
    setup = (f"TESTS = {str(REPO / 'tests' / 'analyze')!r}\nDATA = {str(REPO.parent / 'shared' / 'data' / 'openfield')!r}\n"
             f"HOME = {str(home)!r}\nUID = {uid}\n")
    out = client(gw, setup + textwrap.dedent("""
        import os, signal, sys, time
        from pathlib import Path
        import numpy as np
        sys.path.insert(0, TESTS)
        import analyze_steps as steps  # the tiny model, the clips, the chunk and batch sizes of tests/analyze
        from posehub.analyze import analyze, predict_video
        data, work = Path(DATA), Path(HOME) / "analysis"
        work.mkdir()
        model = steps.train(work, data)
        clips = []
        for name, (first, count) in steps.CLIPS.items():
            clips.append(steps.cut(data / steps.VIDEO, work / f"{name}.mp4", first, count))
        os.system(f"chown -R {UID} {work}")
        cluster = gateway.new_cluster(profile="pose-cpu")
        cluster.scale(2)
        c = cluster.get_client()
        c.wait_for_workers(2, timeout=180)
        job = analyze(model, [str(p) for p in clips], client=c, out=str(work / "out"), chunk_frames=steps.CHUNK,
                      batch=steps.BATCH, retries=2)
        def running_chunk():
            pr = job.progress()
            if sum(p["chunks_done"] for p in pr) < 1:
                return None
            return next((c for p in pr for c in p["chunk_states"] if c["state"] == "running" and c["pid"]), None)
        killed = steps.wait_for(running_chunk, 240, "a chunk running once one is done", job)
        os.kill(killed["pid"], signal.SIGKILL)
        out["killed"] = killed
        assert job.wait(480), f"not done: {job.progress()}"
        out["progress"] = job.progress()
        out["videos"] = {}
        for r in job.results():
            ref = predict_video(model, r.video, batch=steps.BATCH)
            out["videos"][Path(r.video).stem] = {
                "status": r.status, "error": r.error, "frames": r.frames, "files": r.files, "workers": r.workers,
                "equal": bool(np.array_equal(ref["points"], r.points, equal_nan=True)
                              and np.array_equal(ref["scores"], r.scores)),
                "max_diff": float(np.nanmax(np.abs(ref["points"] - r.points))),
                "nan_share": float(np.isnan(ref["points"]).mean())}
        cluster.shutdown()
    """), timeout=900)
    videos = out["videos"]
    assert sorted(videos) == ["clipA", "clipB", "clipC"]
    for name, v in videos.items():
        assert v["status"] == "done" and v["frames"] == dict(clipA=90, clipB=75, clipC=60)[name], (name, v)
        assert v["equal"], (name, v["max_diff"])
        assert v["nan_share"] < 0.5  # there is something to compare
        assert {"csv", "record"} <= set(v["files"]) and all(Path(f).exists() for f in v["files"].values()), v
    chunks = [c for p in out["progress"] for c in p["chunk_states"]]
    assert all(c["state"] == "done" for c in chunks), chunks
    assert max(c["attempts"] for c in chunks) >= 2  # the killed worker's chunk ran again
    assert len({w for v in videos.values() for w in v["workers"]}) >= 2


# ---------------------------------------------------------------- the widget's "Analyse videos" tab, in alice's kernel

DATA = REPO.parent / "shared" / "data" / "openfield"
ALL_STATES = ["pending", "running", "stopping", "stopped", "failed"]


@pytest.fixture(scope="module")
def alice_kernel(gw):
    """A Jupyter kernel of alice's server (her account, her environment), as notebook 05 runs in."""
    k = Kernel.start(gw["hub"], "alice")
    try:
        wait_for(lambda: k.execute("1").status == "ok", timeout=90, what="alice's kernel")
        yield k
    finally:
        k.shutdown()


def in_kernel(kernel: Kernel, code: str, timeout: float = 120) -> dict:
    """Run ``code`` in the kernel; it sets ``out`` (JSON)."""
    r = kernel.execute("import json\nout = {}\n" + textwrap.dedent(code) + "\nprint('OUT=' + json.dumps(out))",
                       timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("OUT=")]
    assert r.status == "ok" and r.error is None and lines, \
        f"{r.status} {r.error}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads(lines[-1][4:])


def charged_spans(hub: Hub, user: str) -> set:
    return {(s.resource_id, str(s.start)) for s in worker_spans(hub, user, open_only=False)}


def all_clusters(ws, token=None) -> list[str]:
    return client(ws, f"out['names'] = sorted(c.name for c in gateway.list_clusters(status={ALL_STATES!r}))",
                  token)["names"]


def chown(path: Path, account: str) -> None:
    pw = pwd.getpwnam(account)
    subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(path)], check=True)


def test_bad_analysis_input_is_refused_and_nothing_is_charged(gw, alice_kernel):
    """A corrupt video, an empty one, a missing model folder, a glob matching nothing, and bob's private folder
    (his home, 0700): analyze() and the widget's Analyse button each say what is wrong, and nothing starts: no
    cluster, no worker, nothing in the ledger."""
    hub = gw["hub"]
    work = hub.home("alice") / "bad-input"
    (work / "run").mkdir(parents=True, exist_ok=True)
    (work / "run" / "model.json").write_text(json.dumps({"framework": "sleap", "bodyparts": ["snout"], "info": {}}))
    (work / "corrupt.mp4").write_bytes(os.urandom(50_000))
    (work / "empty.mp4").write_bytes(b"")
    chown(work, hub.account("alice"))
    # bob's home, as his first spawn makes it (his alone, 0700), with a real video and a run folder in it
    bob = accounts.ensure_account("bob", prefix=hub.config["isolation"]["account_prefix"], group="posehub-users",
                                  homes_dir=hub.data_dir / "homes")
    private = hub.home("bob") / "private"
    (private / "run").mkdir(parents=True, exist_ok=True)
    (private / "run" / "model.json").write_text((work / "run" / "model.json").read_text())
    (private / "clip.mp4").write_bytes((DATA / "videos" / "m3v1mp4.mp4").read_bytes())
    chown(private, hub.account("bob"))
    home_mode = hub.home("bob").stat()
    assert home_mode.st_uid == bob.uid and stat.S_IMODE(home_mode.st_mode) == 0o700
    spans, clusters = charged_spans(hub, "alice"), all_clusters(gw)
    run, bob_run, clip = work / "run", private / "run", private / "clip.mp4"
    direct = {"corrupt": (run, work / "corrupt.mp4"), "empty": (run, work / "empty.mp4"),
              "no_model": (work / "nowhere", DATA / "videos" / "m3v1mp4.mp4"), "no_match": (run, work / "*.avi"),
              "bob_file": (run, clip), "bob_glob": (run, private / "*.mp4")}
    widget = {"corrupt": (run, work / "corrupt.mp4"), "no_match": (run, work / "*.avi"), "bob_file": (run, clip),
              "bob_glob": (run, private / "*.mp4"), "bob_model": (bob_run, work / "corrupt.mp4")}
    out = in_kernel(alice_kernel, f"""
        import html, os, re
        from dask_gateway import Gateway
        from posehub.analyze import AnalyzeError, analyze
        from posehub.ensemble.widget import EnsembleWidget

        def text(value):
            return html.unescape(re.sub("<[^>]+>", "", value))

        class NoClient:
            def __getattr__(self, name):
                raise AssertionError(f"client.{{name}} was used before the input was checked")

        out["uid"] = os.getuid()
        out["direct"] = {{}}
        for name, (model, videos) in {({k: (str(a), str(b)) for k, (a, b) in direct.items()})!r}.items():
            try:
                analyze(model, videos, client=NoClient())
                out["direct"][name] = "no error"
            except AnalyzeError as e:
                out["direct"][name] = str(e)
        ui = EnsembleWidget()
        tab = ui.analyse_tab
        out["profile"] = tab.profile.value
        out["widget"] = {{}}
        for name, (model, videos) in {({k: (str(a), str(b)) for k, (a, b) in widget.items()})!r}.items():
            tab.model.value, tab.videos.value = model, videos
            tab.on_analyse()  # the Analyse button's handler
            out["widget"][name] = {{"message": text(tab.message.value), "started": tab._thread is not None,
                                   "estimate": tab.estimate.value, "analysis": tab.analysis is not None}}
        out["clusters"] = [c.name for c in Gateway().list_clusters()]
    """)
    assert out["uid"] == pwd.getpwnam(hub.account("alice")).pw_uid and out["profile"] == "pose-cpu"
    d = out["direct"]
    assert d["corrupt"].startswith(f"video {work}/corrupt.mp4: not a readable video"), d
    assert d["empty"] == f"video {work}/empty.mp4: an empty file (0 bytes)"
    assert d["no_model"] == f"model folder {work}/nowhere does not exist"
    assert d["no_match"] == f"no videos match {work}/*.avi"
    # what analyze() says of a folder alice may not enter (plan.find_videos: not there, as far as she can see)
    assert d["bob_file"] == f"video {clip}: no such file"
    assert d["bob_glob"] == f"no videos match {private}/*.mp4"
    wd = out["widget"]
    for name, got in wd.items():
        assert got["message"].startswith("Nothing was started: ") and not got["started"] and not got["analysis"], \
            (name, got)
        assert got["estimate"] == "", (name, got)
    assert d["corrupt"] in wd["corrupt"]["message"] and d["no_match"] in wd["no_match"]["message"]
    # the widget says why: the folder is not hers
    keep_out = "(it is another account's, or its permissions keep you out)"
    assert wd["bob_file"]["message"] == f"Nothing was started: videos {clip}: you may not read {hub.home('bob')} " \
                                        + keep_out
    assert wd["bob_glob"]["message"] == f"Nothing was started: videos {private}/*.mp4: you may not read " \
                                        f"{hub.home('bob')} " + keep_out
    assert wd["bob_model"]["message"] == f"Nothing was started: model folder {bob_run}: you may not read " \
                                         f"{hub.home('bob')} " + keep_out
    # nothing started, nothing charged
    assert out["clusters"] == [] and all_clusters(gw) == clusters
    assert not worker_spans(hub, "alice") and charged_spans(hub, "alice") == spans


def test_the_analyse_tab_analyses_a_clip_on_the_gateway(gw, alice_kernel):
    """The widget's Analyse videos tab in alice's kernel: a tiny SLEAP model (the one of the three-clips test when
    it ran, else trained here) over one 60-frame clip on one pose-cpu gateway worker: the estimate, the progress
    per video, the results table with the clip's frames, its files written as alice; the cluster shut down, its
    worker in the ledger."""
    hub = gw["hub"]
    home = hub.home("alice")
    work = home / "tab-analysis"
    model = home / "analysis" / "model"  # test_analysis_of_three_clips_with_a_worker_killed's
    setup = (f"TESTS = {str(REPO / 'tests' / 'analyze')!r}\nDATA = {str(DATA)!r}\nWORK = {str(work)!r}\n"
             f"MODEL = {str(model)!r}\n")
    made = client(gw, setup + textwrap.dedent("""
        import os, sys
        from pathlib import Path
        sys.path.insert(0, TESTS)
        import analyze_steps as steps
        work, model = Path(WORK), Path(MODEL)
        work.mkdir(exist_ok=True)
        if not (model / "model.json").exists():
            model = steps.train(work, Path(DATA))
        out["model"] = str(model)
        first, count = steps.CLIPS["clipC"]
        out["clip"] = str(steps.cut(Path(DATA) / steps.VIDEO, work / "clipC.mp4", first, count))
    """), timeout=600)
    chown(work, hub.account("alice"))
    spans = charged_spans(hub, "alice")
    out = in_kernel(alice_kernel, f"""
        import html, re
        from posehub.analyze import form
        from posehub.ensemble.widget import EnsembleWidget
        ui = EnsembleWidget()
        tab = ui.analyse_tab
        tab.model.value, tab.videos.value, tab.out.value = {made['model']!r}, {made['clip']!r}, {str(work / 'out')!r}
        tab.workers.value = 1
        tab.on_analyse()
        out["estimate"] = html.unescape(re.sub("<[^>]+>", "", tab.estimate.value))
        out["started"] = tab._thread is not None
        tab._thread.join(600)
        out["alive"] = tab._thread.is_alive()
        out["message"] = html.unescape(re.sub("<[^>]+>", "", tab.message.value))
        out["progress"] = html.unescape(tab.progress.value)
        out["results"] = html.unescape(tab.results.value)
        out["rows"] = form.result_rows(tab.analysis.results())
        out["cluster"] = tab.cluster.name
    """, timeout=700)
    assert out["started"] and not out["alive"], out
    assert out["estimate"].startswith("Estimate: 60 frames of 1 video(s) in 1 chunk(s) on 1 CPU worker(s)"), out
    assert out["message"] == "Done: 1 of 1 video(s) analysed. The files are listed per video below.", out
    assert "<td>clipC</td><td>done</td><td>1/1</td><td>60/60</td>" in out["progress"], out["progress"]
    (row,) = out["rows"]
    assert row["video"] == "clipC.mp4" and row["status"] == "done" and row["frames"] == 60 and row["error"] == ""
    assert row["mean confidence"] != "–" and row["low-confidence share"].endswith(" %")
    files = row["output files"].split("\n")
    assert {Path(f).name for f in files} == {"clipC.posehub.csv", "clipC.predictions.slp", "clipC.analysis.json"}
    alice_uid = pwd.getpwnam(hub.account("alice")).pw_uid
    assert all(Path(f).parent == work / "out" and Path(f).stat().st_uid == alice_uid for f in files)
    assert "<td>clipC.mp4</td><td>done</td><td>60</td>" in out["results"]
    # the cluster is shut down, its worker was metered at the profile's rate
    wait_for(lambda: not client(gw, "out['n'] = len(gateway.list_clusters())")["n"], timeout=60,
             what="the tab's cluster to shut down")
    wait_for(lambda: not worker_spans(hub, "alice"), timeout=60, what="the worker spans to close")
    new = [s for s in worker_spans(hub, "alice", open_only=False) if (s.resource_id, str(s.start)) not in spans]
    assert new and {s.resource_id.split("/")[0] for s in new} == {out["cluster"]}
    assert all(s.profile == "pose-cpu" and s.rate == Decimal("0.2") for s in new)
