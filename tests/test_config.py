"""The config file: defaults validate, and each bad case stops with one exact message."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from posehub.config import DEFAULT_CONFIG, ConfigError, load, validate

REPO = Path(__file__).resolve().parents[1]
POSEHUB = REPO / ".venv" / "bin" / "posehub"
JUPYTERHUB = REPO / ".venv" / "bin" / "jupyterhub"


def minimal():
    return {
        "images": {"base": {}},
        "profiles": [{"slug": "cpu", "display_name": "CPU", "image": "base", "price_per_hour": 0.1}],
    }


def write(tmp_path, data) -> Path:
    p = tmp_path / "posehub.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_embedded_default_validates_and_fills_defaults():
    cfg = load(DEFAULT_CONFIG)
    assert cfg["hub"]["port"] == 8000
    assert cfg["budgets"]["default"] == 300
    assert [p["slug"] for p in cfg["profiles"]] == ["cpu-small", "pose-cpu", "cpu-large", "gpu"]
    assert {p["slug"]: p["image"] for p in cfg["profiles"]} == {
        "cpu-small": "base", "pose-cpu": "pose", "cpu-large": "pose", "gpu": "pose"}


def test_minimal_config_gets_schema_defaults():
    cfg = validate(minimal())
    p = cfg["profiles"][0]
    assert (p["cpu"], p["memory"], p["gpus"], p["description"]) == (1, "2G", 0, "")
    assert cfg["auth"]["type"] == "local"
    assert cfg["budgets"] == {"period": "monthly", "default": 300, "groups": {}, "users": {},
                              "minimum_block_hours": 1}
    assert cfg["gpus"]["devices"] == "auto"


def test_defaults_in_schema_validate_on_their_own():
    # Every default declared in the schema is itself valid (no drift between defaults and rules).
    cfg = validate(minimal())
    validate(cfg.data)


BAD_CASES = {
    "unknown key": (
        lambda c: c["profiles"][0].update(gpu=1),
        "profiles[0].gpu: unknown key 'gpu' (expected one of: allowed_groups, allowed_users, aws_instance_type, "
        "cpu, description, display_name, gpus, idle_minutes, image, memory, price_per_hour, slug)",
    ),
    "unknown top-level key": (
        lambda c: c.update(budget={"default": 10}),
        "budget: unknown key 'budget' (expected one of: admins, auth, buckets, budgets, costs, culling, dask, gpus, groups, "
        "hub, images, isolation, profiles, watch)",
    ),
    "wrong type": (
        lambda c: c["profiles"][0].update(cpu="two"),
        'profiles[0].cpu: expected a number, got "two"',
    ),
    "wrong type nested": (
        lambda c: c.update(hub={"port": "8000"}),
        'hub.port: expected an integer, got "8000"',
    ),
    "unknown image": (
        lambda c: c["profiles"][0].update(image="pose"),
        "profiles[0].image: unknown image 'pose' (expected one of: base)",
    ),
    "negative price": (
        lambda c: c["profiles"][0].update(price_per_hour=-1),
        "profiles[0].price_per_hour: expected a number >= 0, got -1",
    ),
    "negative budget": (
        lambda c: c.update(budgets={"users": {"alice": -5}}),
        "budgets.users.alice: expected a number >= 0, got -5",
    ),
    "missing required": (
        lambda c: c["profiles"][0].pop("price_per_hour"),
        "profiles[0].price_per_hour: missing (required)",
    ),
    "bad enum": (
        lambda c: c.update(budgets={"period": "yearly"}),
        'budgets.period: expected one of "monthly", "weekly", got "yearly"',
    ),
    "duplicate slug": (
        lambda c: c["profiles"].append(dict(c["profiles"][0])),
        "profiles[1].slug: 'cpu' is already used by profiles[0]",
    ),
    "demo bucket not shared": (
        lambda c: c.update(buckets={"demo_bucket": "videos", "shared": [{"name": "labels"}]}),
        "buckets.demo_bucket: 'videos' is not one of buckets.shared (expected one of: labels)",
    ),
    "one person, two admins": (
        lambda c: c.update(isolation={"mode": "one-person-no-isolation"}, admins=["ann", "ben"]),
        "isolation.mode: 'one-person-no-isolation' runs every server as the hub's own account, so it is only for "
        "one person's own workstation; this file names 2 people (ann, ben). Name exactly one under admins and no "
        "one else, or use isolation.mode: accounts (run the hub as root)",
    ),
    "one person, group members": (
        lambda c: c.update(isolation={"mode": "one-person-no-isolation"}, admins=["ann"],
                           groups={"lab": {"users": ["ann", "ben"]}}),
        "isolation.mode: 'one-person-no-isolation' runs every server as the hub's own account, so it is only for "
        "one person's own workstation; this file names 2 people (ann, ben). Name exactly one under admins and no "
        "one else, or use isolation.mode: accounts (run the hub as root)",
    ),
    "one person, open sign-up": (
        lambda c: c.update(isolation={"mode": "one-person-no-isolation"}, admins=["ann"],
                           auth={"local": {"open_signup": True}}),
        "isolation.mode: 'one-person-no-isolation' runs every server as the hub's own account, so it is only for "
        "one person's own workstation; open sign-up lets anyone make an account. Set auth.local.open_signup: false, "
        "or use isolation.mode: accounts (run the hub as root)",
    ),
    "bad account prefix": (
        lambda c: c.update(isolation={"account_prefix": "Pose Hub"}),
        'isolation.account_prefix: expected a string matching ^[a-z_][a-z0-9_-]{0,15}$, got "Pose Hub"',
    ),
    "tls cert without key": (
        lambda c: c.update(hub={"tls": {"cert_file": "hub.crt"}}),
        "hub.tls: give both cert_file and key_file (the certificate and its private key), or neither",
    ),
    "tls proxy not https": (
        lambda c: c.update(hub={"ip": "0.0.0.0", "tls": {"behind_proxy_url": "http://hub.lab.example"}}),
        'hub.tls.behind_proxy_url: expected a string matching ^(https://.+)?$, got "http://hub.lab.example"',
    ),
    "gpus devices": (
        lambda c: c.update(gpus={"devices": "all"}),
        'gpus.devices: expected one of "auto" or a list of integers, got "all"',
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_config_exact_message(tmp_path, case):
    change, message = BAD_CASES[case]
    data = minimal()
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"{path}: {message}"


def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "images:\n  base: {\nprofiles: []\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: not valid YAML at line ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "nope.yaml")
    assert str(err.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_top_level_not_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"{path}: (top level): expected a mapping, got a list"


def test_check_config_cli(tmp_path):
    ok = subprocess.run([POSEHUB, "check-config", DEFAULT_CONFIG], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: ")
    data = minimal()
    data["profiles"][0]["price_per_hour"] = -1
    path = write(tmp_path, data)
    bad = subprocess.run([POSEHUB, "check-config", path], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr == f"invalid: {path}: profiles[0].price_per_hour: expected a number >= 0, got -1\n"
    assert "Traceback" not in bad.stderr


def test_version_cli():
    out = subprocess.run([POSEHUB, "version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "posehub 0.1.0"


def test_a_hub_behind_a_tls_proxy_may_listen_on_every_address():
    cfg = validate(dict(minimal(), hub={"ip": "0.0.0.0", "tls": {"behind_proxy_url": "https://hub.lab.example"}}))
    assert cfg.public_url == "https://hub.lab.example"
    assert validate(dict(minimal(), hub={"tls": {"cert_file": "c", "key_file": "k"}})).public_url.startswith("https://")


def test_one_person_mode_for_one_named_person_validates():
    cfg = validate(dict(minimal(), isolation={"mode": "one-person-no-isolation"}, admins=["ann"],
                        groups={"lab": {"users": ["ann"]}}))
    assert not cfg.isolated
    assert validate(minimal()).isolated  # accounts are the default


@pytest.mark.skipif(os.geteuid() != 0, reason="runs posehub up as another (unprivileged) account")
def test_hub_not_run_as_root_refuses_accounts_mode_and_creates_nothing():
    """`posehub up` as an ordinary account, with isolation.mode: accounts (the default): one sentence saying what to
    do, exit 2, and no state or data folder made."""
    import shutil
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own folders are closed to other accounts
    os.chmod(tmp_path, 0o777)
    data = minimal()
    data["hub"] = {"state_dir": str(tmp_path / "state"), "data_dir": str(tmp_path / "data")}
    path = write(tmp_path, data)
    out = subprocess.run([POSEHUB, "up", "--config", path], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, user="nobody", group="nogroup")
    assert out.returncode == 2, out.stdout + out.stderr
    assert ("PoseHub cannot start: isolation.mode 'accounts' gives every user their own system account and control "
            "group, which needs root: run the hub as root (`sudo make up`), or, on your own workstation with no one "
            "else signing in, set isolation.mode: one-person-no-isolation") in out.stderr.splitlines()
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "state").exists() and not (tmp_path / "data").exists()
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("launcher", ["posehub up", "jupyterhub"])
def test_hub_refuses_to_start_with_bad_config(tmp_path, launcher):
    """The real hub stops at start with one message naming the key: no stack trace."""
    data = minimal()
    data["profiles"][0]["image"] = "pose"
    data["hub"] = {"state_dir": str(tmp_path / "state")}
    path = write(tmp_path, data)
    if launcher == "posehub up":
        cmd = [POSEHUB, "up", "--config", path]
    else:
        cmd = [JUPYTERHUB, "-f", REPO / "hub_config" / "jupyterhub_config.py"]
    env = {"POSEHUB_CONFIG": str(path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert out.returncode == 2
    expected = f"PoseHub cannot start: {path}: profiles[0].image: unknown image 'pose' (expected one of: base)"
    assert expected in out.stderr.splitlines()
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "state" / "jupyterhub.sqlite").exists()
