"""Dask Gateway policy (posehub.gateway.policy, settings) and its config: pure, no servers."""

import json
from decimal import Decimal

import pytest

from posehub.config import ConfigError, validate
from posehub.gateway import policy, settings


def config(**dask):
    return validate({
        "hub": {"admin_contact": "help@lab.example"},
        "groups": {"staff": {"users": ["sam"]}},
        "images": {"base": {}, "pose": {}},
        "profiles": [
            {"slug": "small", "display_name": "Small", "image": "base", "price_per_hour": 0.1},
            {"slug": "pose-cpu", "display_name": "Pose (CPU)", "image": "pose", "cpu": 4, "memory": "16G",
             "price_per_hour": 0.2},
            {"slug": "gpu", "display_name": "One GPU", "image": "pose", "cpu": 8, "memory": "32G", "gpus": 1,
             "price_per_hour": 1.21, "allowed_groups": ["staff"]},
        ],
        "dask": dask,
    })


def limit(cfg, slug, running=(), remaining="100", block="1"):
    return policy.max_workers(cfg, cfg.profile(slug), list(running), Decimal(remaining), Decimal(block),
                              Decimal("300"), "2026-11")


def test_worker_profiles_follow_access_rules_and_the_list():
    cfg = config(worker_profiles=["pose-cpu", "gpu"])
    assert [p["slug"] for p in policy.worker_profiles(cfg, "alice", [])] == ["pose-cpu"]
    assert [p["slug"] for p in policy.worker_profiles(cfg, "sam", ["staff"])] == ["pose-cpu", "gpu"]
    env = json.loads(policy.profiles_env(cfg, "sam", ["staff"]))
    assert [p["slug"] for p in env] == ["pose-cpu", "gpu"] and env[1]["price_per_hour"] == 1.21


def test_worker_profiles_follow_the_admin_pages_settings_like_servers():
    from cost_reports.profile_rules import Access, ProfileSettings, effective

    cfg = config(worker_profiles=["pose-cpu", "gpu"])
    moved = effective(cfg["profiles"], ProfileSettings(access={"gpu": Access(("alice",), ())}))
    assert [p["slug"] for p in policy.worker_profiles(cfg, "alice", [], effective=moved)] == ["pose-cpu", "gpu"]
    assert [p["slug"] for p in policy.worker_profiles(cfg, "sam", ["staff"], effective=moved)] == ["pose-cpu"]
    assert [p["slug"] for p in json.loads(policy.profiles_env(cfg, "sam", ["staff"], effective=moved))] == ["pose-cpu"]


def test_check_profile_messages():
    cfg = config()
    offered = policy.worker_profiles(cfg, "alice", [])
    with pytest.raises(policy.Refused, match="Worker profile 'gpu' is not open to you. Profiles you may use: "
                                             "small, pose-cpu. Ask help@lab.example for access."):
        policy.check_profile(cfg, "gpu", offered)
    with pytest.raises(policy.Refused, match="Unknown worker profile 'tpu'"):
        policy.check_profile(cfg, "tpu", offered)


def test_limits_per_user_and_budget():
    cfg = config(max_clusters_per_user=2, max_workers_per_user=4, max_gpus_per_user=2)
    assert limit(cfg, "pose-cpu") == 4
    assert limit(cfg, "pose-cpu", [policy.Running("a", "pose-cpu", 3)]) == 1
    with pytest.raises(policy.Refused, match="already hold 4 of the 4 workers"):
        limit(cfg, "pose-cpu", [policy.Running("a", "pose-cpu", 4)])
    with pytest.raises(policy.Refused, match="You already run 2 Dask cluster"):
        limit(cfg, "pose-cpu", [policy.Running("a", "pose-cpu", 1), policy.Running("b", "pose-cpu", 1)])
    assert limit(cfg, "gpu") == 2  # GPUs per user
    with pytest.raises(policy.Refused, match="need 1 GPU"):
        limit(cfg, "gpu", [policy.Running("a", "gpu", 2)])
    assert limit(cfg, "gpu", remaining="2.50") == 2 and limit(cfg, "gpu", remaining="1.30") == 1  # the budget
    with pytest.raises(policy.Refused, match=r"one worker needs \$1.21 for a first block of 1 h at \$1.21/h, "
                                             r"and you have \$1.00 left of \$300.00 for 2026-11"):
        limit(cfg, "gpu", remaining="1.00")


def test_gpu_workers_on_one_machine_are_capped_by_the_free_gpus():
    cfg = config(max_gpus_per_user=4, max_workers_per_user=8)
    free = lambda n, of=4: policy.max_workers(cfg, cfg.profile("gpu"), [], Decimal(100), Decimal(1), Decimal(300),
                                              "2026-11", free_gpus=n, machine_gpus=of)
    assert free(4) == 4 and free(1) == 1 and limit(cfg, "gpu") == 4  # None: Kubernetes places the GPUs
    with pytest.raises(policy.Refused) as e:
        free(0)
    assert str(e.value) == ("Workers of 'One GPU' need 1 GPU(s) each and 0 of this machine's 4 GPU(s) are free (the "
                            "others are held by JupyterLab servers and Dask workers). Try again when one is released, "
                            "or pick a CPU worker profile.")
    with pytest.raises(policy.Refused, match="and this machine has no GPU \\(none found by nvidia-smi"):
        free(0, of=0)
    assert policy.max_workers(cfg, cfg.profile("pose-cpu"), [], Decimal(100), Decimal(1), Decimal(300), "2026-11",
                              free_gpus=0, machine_gpus=4) == 8  # CPU workers need none


def test_cluster_config_runs_the_profile_environment_with_current_dask_commands():
    cfg = config(task_retries=4)
    cpu = policy.cluster_config(cfg, cfg.profile("pose-cpu"), 3)
    assert cpu["scheduler_cmd"][-1] == "scheduler" and cpu["worker_cmd"][-1] == "worker"
    assert cpu["worker_cmd"][0].endswith("/.envs/pose/bin/dask")
    assert cpu["worker_cores"] == 4 and cpu["worker_memory"] == 16 << 30 and cpu["cluster_max_workers"] == 3
    env = cpu["environment"]
    assert json.loads(env["DASK_DISTRIBUTED__WORKER__RESOURCES"]) == {"member": 1}
    assert env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] == "4"
    gpu = policy.cluster_config(cfg, cfg.profile("gpu"), 1)["environment"]
    assert json.loads(gpu["DASK_DISTRIBUTED__WORKER__RESOURCES"]) == {"GPU": 1}  # the name's case kept


def test_settings_and_client_env():
    cfg = config(port=9100, scheduler_port=9101, api_port=9102)
    env = settings.client_env(cfg)
    assert env["DASK_GATEWAY__ADDRESS"] == "http://127.0.0.1:9100/services/dask-gateway"
    assert env["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://127.0.0.1:9101"
    assert env["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"


@pytest.mark.parametrize("dask, message", [
    ({"worker_profiles": ["nope"]}, "dask.worker_profiles[0]: unknown profile 'nope'"),
    ({"default_worker_profile": "small", "worker_profiles": ["gpu"]},
     "dask.default_worker_profile: 'small' is not a worker profile (expected one of: gpu)"),
    ({"port": 8000}, "dask.port: port 8000 is already used by hub.port"),
    ({"task_retries": 0}, "dask.task_retries"),
])
def test_bad_dask_config_is_refused(dask, message):
    with pytest.raises(ConfigError, match=None) as e:
        config(**dask)
    assert message in str(e.value)
