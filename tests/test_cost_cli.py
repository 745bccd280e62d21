"""`posehub cost report|estimate` and `posehub prices refresh`, run as the real command."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import yaml

from cost_reports.db import CostDB
from cost_reports.ledger import Ledger
from hubfixture import POSEHUB, base_config, free_port
from posehub.config import ConfigError, set_prices_text

UTC = timezone.utc


def run(*args, env=None):
    import os

    return subprocess.run([str(POSEHUB), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def config_file(tmp_path):
    cfg = base_config(tmp_path / "state")
    cfg["budgets"] = {"users": {"alice": 50}}
    cfg["groups"] = {"staff": {"users": ["sam"]}}
    cfg["profiles"][0]["aws_instance_type"] = "t3.medium"
    path = tmp_path / "posehub.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "state").mkdir()
    return path


def fill_ledger(config_file):
    state = yaml.safe_load(config_file.read_text())["hub"]["state_dir"]
    db = CostDB(f"sqlite:///{state}/costs.sqlite")
    db.create_all()
    ledger = Ledger(db)
    t = lambda d, h, m=0: datetime(2026, 10, d, h, m, tzinfo=UTC)  # noqa: E731
    # alice: 10 h of cpu-small ($0.10/h) = $1.00, and 2.5 h of cpu-staff ($0.40/h) = $1.00
    s = ledger.open_span("alice", "server", "", "0.1", profile="cpu-small", start=t(5, 8))
    ledger.close_span(s.id, t(5, 18))
    s = ledger.open_span("alice", "server", "", "0.4", profile="cpu-staff", start=t(6, 9))
    ledger.close_span(s.id, t(6, 11, 30))
    # sam: 31 h at $1.21 = $37.51, crossing into November: only Oct 31 17:00 -> Nov 1 00:00 (7 h = $8.47) counts
    s = ledger.open_span("sam", "server", "", "1.21", profile="gpu", start=t(31, 17))
    ledger.close_span(s.id, datetime(2026, 11, 2, 0, 0, tzinfo=UTC))


def test_cost_report_csv_json_html(config_file):
    fill_ledger(config_file)
    r = run("cost", "report", "--period", "2026-10", "--format", "csv", "--config", str(config_file))
    assert r.returncode == 0, r.stderr
    # sorted by percent used: sam 8.47/300 = 2.8 %, alice 2.00/50 = 4.0 %, admin 0 %
    assert r.stdout.splitlines() == [
        "user,spent,budget,remaining,percent_used,forecast",
        "alice,2.00,50.00,48.00,4.0,2.00",
        "sam,8.47,300.00,291.53,2.8,8.47",
        "admin,0.00,300.00,300.00,0.0,0.00",
    ]
    r = run("cost", "report", "--period", "2026-10", "--format", "json", "--config", str(config_file))
    data = json.loads(r.stdout)
    assert data["total_spent"] == "10.47" and data["period"] == "2026-10"
    r = run("cost", "report", "--period", "2026-10", "--format", "html", "--config", str(config_file))
    assert "<table class=\"cost-admin\" data-period=\"2026-10\">" in r.stdout and "<td class=\"user\">sam</td>" in r.stdout
    r = run("cost", "report", "--period", "2026-10", "--user", "alice", "--format", "json", "--config", str(config_file))
    mine = json.loads(r.stdout)
    assert mine["by_profile"] == {"cpu-small": "1.00", "cpu-staff": "1.00"}
    assert mine["by_day"]["2026-10-05"] == "1.00" and mine["by_day"]["2026-10-06"] == "1.00"


@pytest.mark.parametrize("args,message", [
    (["--period", "2026-13"], "error: unknown period '2026-13': month 13 is not 01..12"),
    (["--period", "2026-W47"], "error: period '2026-W47' is weekly, but budgets here are monthly"),
])
def test_cost_report_bad_period(config_file, args, message):
    fill_ledger(config_file)
    r = run("cost", "report", *args, "--config", str(config_file))
    assert r.returncode == 2 and r.stderr.strip() == message and r.stdout == ""


def test_cost_report_without_a_ledger(config_file):
    r = run("cost", "report", "--config", str(config_file))
    assert r.returncode == 2 and "the hub has not run with this config yet" in r.stderr


def study_estimate(config_file, profile, *extra):
    """The study's usage pattern (10 users, 8 h each weekday, 2 h each weekend day) in December 2026."""
    r = run("cost", "estimate", "--users", "10", "--hours-weekday", "8", "--hours-weekend", "2", *extra,
            "--profile", profile, "--month", "2026-12", "--config", str(config_file))
    assert r.returncode == 0, r.stderr
    return r


def test_cost_estimate(config_file):
    r = study_estimate(config_file, "cpu-staff")
    # December 2026: 23 weekdays, 8 weekend days: 23 x 8 + 8 x 2 = 200 h x $0.40 = $80.00 per user
    assert r.stdout.splitlines() == [
        "2026-12: 23 weekdays x 8.0 h + 8 weekend days x 2.0 h = 200 h per user on 'cpu-staff' at $0.4/h",
        "compute per user: $80.00 per month",
        "fixed costs: none set (costs.fixed_monthly)",
        "total per user-month: $80.00",
        "10 users: $800.00 per month",
    ]
    r = run("cost", "estimate", "--users", "3", "--hours-weekday", "25", "--profile", "cpu-staff",
            "--config", str(config_file))
    assert r.returncode == 2 and r.stderr.strip() == "error: hours per weekday must be at most 24, got 25.0"
    r = run("cost", "estimate", "--users", "3", "--hours-weekday", "2", "--profile", "nope", "--config", str(config_file))
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown profile 'nope' (expected one of: cpu-small, cpu-staff)"


# on-demand us-east-1 prices: g4dn.xlarge (4 vCPU, one T4), and the platform around it on EKS
STUDY_FIXED = {"EKS control plane": 73.00, "load balancer": 16.43, "NAT gateway": 32.85,
               "hub instance (t3.medium)": 30.37, "shared storage": 2.30}


def test_cost_estimate_of_the_study_pattern_with_the_platforms_fixed_costs(config_file):
    """10 users, 8 h each weekday, 2 h each weekend day, on 4 vCPU and one T4: the figures the README compares
    with AppStream 2.0 ($161.94 a Linux user-month, $196.07 Windows)."""
    cfg = yaml.safe_load(config_file.read_text())
    cfg["profiles"].append({"slug": "gpu-t4", "display_name": "4 vCPU, one T4", "image": "base", "cpu": 4,
                            "memory": "16G", "gpus": 1, "price_per_hour": 0.526, "aws_instance_type": "g4dn.xlarge"})
    cfg.setdefault("costs", {})["fixed_monthly"] = STUDY_FIXED
    config_file.write_text(yaml.safe_dump(cfg))
    r = study_estimate(config_file, "gpu-t4")
    # 200 h x $0.526 = $105.20 of compute; $154.95 of fixed costs / 10 users = $15.50 (15.495): $120.70
    assert r.stdout.splitlines() == [
        "2026-12: 23 weekdays x 8.0 h + 8 weekend days x 2.0 h = 200 h per user on 'gpu-t4' at $0.526/h",
        "compute per user: $105.20 per month",
        "fixed costs: $154.95 per month (EKS control plane $73.00, NAT gateway $32.85, hub instance (t3.medium) "
        "$30.37, load balancer $16.43, shared storage $2.30), $15.50 per user",
        "total per user-month: $120.70",
        "10 users: $1,206.95 per month",
    ]
    r = study_estimate(config_file, "gpu-t4", "--format", "json")
    data = json.loads(r.stdout)
    assert (data["per_user"], data["fixed_per_user"], data["per_user_month"]) == ("105.20", "15.50", "120.70")
    cfg["costs"]["fixed_monthly"] = {"NAT gateway": -3}
    config_file.write_text(yaml.safe_dump(cfg))
    r = run("cost", "estimate", "--users", "10", "--hours-weekday", "8", "--profile", "gpu-t4",
            "--config", str(config_file))
    assert r.returncode == 2 and "costs.fixed_monthly" in r.stderr and r.stdout == ""


def test_prices_refresh_with_the_price_list_api_down_changes_nothing(config_file):
    before = config_file.read_text()
    # AWS is outside our control: here its endpoint is a closed loopback port
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_MAX_ATTEMPTS": "1"}
    r = run("prices", "refresh", "--write", "--config", str(config_file), env=env)
    assert r.returncode == 2
    assert r.stderr.startswith("error: AWS Price List API: cannot get the price of t3.medium in US East (N. Virginia):")
    assert config_file.read_text() == before


def test_set_prices_text_keeps_comments_and_layout():
    text = ("profiles:\n  # the cheap one\n  - slug: cpu-small\n    display_name: Small\n"
            "    price_per_hour: 0.10  # dollars\n  - slug: gpu\n    price_per_hour: 1.21\n")
    out = set_prices_text(text, {"cpu-small": Decimal("0.0416")})
    assert out == text.replace("price_per_hour: 0.10  # dollars", "price_per_hour: 0.0416  # dollars")
    with pytest.raises(ConfigError, match="cannot find 'price_per_hour' of profile 'tpu'"):
        set_prices_text(text, {"tpu": Decimal(1)})
