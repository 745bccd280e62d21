import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hubfixture import TEST_ACCOUNT_PREFIX, Hub, base_config  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def remove_test_accounts():
    """Test hubs run every user as a system account (isolation.mode: accounts; `make test`'s setup makes the
    checkout reachable by them): the accounts the tests made are removed at the end."""
    import os
    import pwd
    import subprocess

    yield
    if os.geteuid() == 0:
        _remove_empty_control_groups()
        for pw in pwd.getpwall():
            if pw.pw_name.startswith(TEST_ACCOUNT_PREFIX) and pw.pw_gecos.startswith("PoseHub user "):
                subprocess.run(["pkill", "-KILL", "-u", pw.pw_name], capture_output=True)
                subprocess.run(["userdel", pw.pw_name], capture_output=True)


def _remove_empty_control_groups():
    """The parent control groups the test hubs made (``posehub-<hash of the state folder>``), once empty."""
    import os

    from posehub.hub.cgroups import own_paths

    root = "/sys/fs/cgroup"
    for controller, own in own_paths().items():
        base = os.path.join(root, controller, own.lstrip("/"))
        if not os.path.isdir(base):
            continue
        for entry in os.scandir(base):
            if entry.is_dir() and entry.name.startswith("posehub-") and entry.name != "posehub-hub":
                for child in os.scandir(entry.path):
                    if child.is_dir():
                        try:
                            os.rmdir(child.path)
                        except OSError:
                            pass  # still holds processes
                try:
                    os.rmdir(entry.path)
                except OSError:
                    pass


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def hub_config(tmp_path):
    """A config for a test hub: free ports, state in tmp_path. Tests may change it before `hub` starts."""
    return base_config(tmp_path / "state")


@pytest.fixture
def hub(request, hub_config, tmp_path):
    h = Hub(copy.deepcopy(hub_config), tmp_path).start()
    yield h
    h.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(f"\n----- hub log ({h.log_file}) -----\n{h.log()[-20000:]}")
