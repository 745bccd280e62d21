"""The cost service's launcher answers at once and exits with the error when the service cannot load."""

from __future__ import annotations

import os
import subprocess
import sys

import requests
import yaml

from hubfixture import free_port, wait_for
from posehub.config import DEFAULT_CONFIG


def launch(tmp_path, config_text: str):
    cfg = tmp_path / "posehub.yaml"
    cfg.write_text(config_text)
    port = free_port()
    env = dict(os.environ, POSEHUB_CONFIG=str(cfg), JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}",
               JUPYTERHUB_API_TOKEN="t", JUPYTERHUB_API_URL="http://127.0.0.1:1/hub/api",
               JUPYTERHUB_CLIENT_ID="service-cost", JUPYTERHUB_SERVICE_PREFIX="/services/cost/")
    proc = subprocess.Popen([sys.executable, "-m", "posehub.costservice"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}/services/cost/"


def test_a_bad_config_ends_the_service_with_its_message(tmp_path):
    proc, _ = launch(tmp_path, "hub: {port: nope}\n")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.startswith(f"cost service cannot start: {tmp_path / 'posehub.yaml'}: ")


def test_the_launcher_answers_before_the_service_has_loaded_then_hands_over(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["hub"]["state_dir"] = str(tmp_path / "state")
    proc, url = launch(tmp_path, yaml.safe_dump(raw))
    try:
        first = wait_for(lambda: [requests.get(url + "api/status", timeout=2)], timeout=30, what="an answer")[0]
        assert first.status_code == 425 and "starting" in first.text
        # then the real service: it sends a request without a token to sign in with the hub
        r = wait_for(lambda: (lambda r: [r] if r.status_code != 425 else None)(
            requests.get(url + "api/status", timeout=10, allow_redirects=False)), timeout=90, what="the service")[0]
        assert r.status_code in (302, 401, 403)
    finally:
        proc.terminate()
        proc.wait(30)


def test_cost_reports_imports_nothing_of_posehub():
    """Imports go one way: posehub uses cost_reports (the cost gate, the service's launcher), never back."""
    import ast
    from pathlib import Path

    import cost_reports

    found = []
    for path in sorted(Path(cost_reports.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name}: {n}" for n in names if n == "posehub" or n.startswith("posehub.")]
    assert found == []
