"""What users of these platforms expect in JupyterLab, tried in a real workspace: the memory/CPU indicator
(jupyter-resource-usage), a Dask dashboard (bokeh) reached through the server's proxy
(jupyter-server-proxy), and JupyterLab's Dask panel (dask-labextension)."""

from __future__ import annotations

import pytest
import requests

from hubfixture import spawn_with_form, wait_for, wait_ready
from kernel import Kernel

pytestmark = pytest.mark.slow


def test_resource_usage_dask_dashboard_and_dask_panel(hub):
    hub.create_user("alice", "correct-horse-9")
    assert spawn_with_form(hub, hub.session("alice", "correct-horse-9"), "cpu-small").status_code == 200
    wait_ready(hub, "alice")
    token = Kernel.token_for(hub, "alice")
    auth = {"Authorization": f"token {token}"}
    base = f"{hub.url}/user/alice"

    usage = requests.get(f"{base}/api/metrics/v1", headers=auth, timeout=30)
    assert usage.status_code == 200 and usage.json()["rss"] > 0

    kernel = Kernel.start(hub, "alice", token)
    r = kernel.execute("from distributed import Client, LocalCluster\n"
                       "cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, "
                       "dashboard_address='127.0.0.1:0')\n"
                       "client = Client(cluster)\n"
                       "print(cluster.scheduler.services['dashboard'].port)", timeout=120)
    assert r.error is None, (r.error, r.stderr[-2000:])
    port = int(r.stdout.split()[-1])
    status = wait_for(lambda: [requests.get(f"{base}/proxy/{port}/status", headers=auth, timeout=30)],
                      timeout=60, what="the dashboard")[0]
    assert status.status_code == 200 and "Bokeh" in status.text  # the dashboard, drawn by bokeh

    panel = requests.get(f"{base}/dask/clusters", headers=auth, timeout=30)
    assert panel.status_code == 200 and isinstance(panel.json(), list)
    kernel.execute("client.close(); cluster.close()", timeout=60)
