"""Pure policy: who gets which profile, GPU bookkeeping, bucket layout."""

import pytest

from posehub import gpus, profiles

from posehub.hub import buckets, workspace
from posehub.config import validate


def cfg(**extra):
    data = {
        "images": {"base": {}},
        "profiles": [
            {"slug": "open", "display_name": "Open", "image": "base", "price_per_hour": 0.1},
            {"slug": "staff", "display_name": "Staff", "image": "base", "price_per_hour": 1,
             "allowed_groups": ["staff"]},
            {"slug": "vip", "display_name": "VIP", "image": "base", "price_per_hour": 2,
             "allowed_users": ["carol"], "allowed_groups": ["pis"]},
            {"slug": "nobody", "display_name": "Nobody", "image": "base", "price_per_hour": 2,
             "allowed_users": []},
        ],
        "groups": {"staff": {"users": ["bob"]}},
    }
    data.update(extra)
    return validate(data)


@pytest.mark.parametrize(
    "user, groups, admin, expected",
    [
        ("alice", [], False, ["open"]),
        ("bob", ["staff"], False, ["open", "staff"]),
        ("carol", [], False, ["open", "vip"]),
        ("dan", ["pis", "staff"], False, ["open", "staff", "vip"]),
        ("root", [], True, ["open", "staff", "vip", "nobody"]),
    ],
)
def test_allowed_profiles(user, groups, admin, expected):
    assert [p["slug"] for p in profiles.allowed_profiles(cfg(), user, groups, admin)] == expected


def test_config_groups_of():
    assert profiles.config_groups_of(cfg(), "bob") == ["staff"]
    assert profiles.config_groups_of(cfg(), "alice") == []


def test_memory_and_summary():
    assert profiles.memory_bytes("4G") == 4 * 1024**3
    assert profiles.memory_bytes("512M") == 512 * 1024**2
    p = {"cpu": 8, "memory": "32G", "gpus": 2, "price_per_hour": 1.2}
    assert profiles.summary(p) == "8 CPU · 32G RAM · 2 GPUs · $1.20/h"


def test_gpu_pool_exclusive_and_released():
    pool = gpus.GpuPool([0, 1])
    assert pool.acquire("alice/", 1) == [0]
    assert pool.acquire("alice/", 1) == [0]  # idempotent for the same server
    assert pool.acquire("bob/", 1) == [1]
    with pytest.raises(gpus.NoFreeGpu) as err:
        pool.acquire("carol/", 1)
    assert str(err.value) == (
        "This profile needs 1 GPU, but only 0 of 2 are free (2 in use by other servers or Dask workers). "
        "Pick a CPU profile or try again when one is released."
    )
    pool.release("alice/")
    assert pool.acquire("carol/", 1) == [0]


def test_gpu_pool_all_or_nothing():
    pool = gpus.GpuPool([0, 1, 2])
    pool.acquire("a/", 2)
    with pytest.raises(gpus.NoFreeGpu):
        pool.acquire("b/", 2)
    assert pool.free() == [2]


def test_gpu_pool_no_gpu_message():
    with pytest.raises(gpus.NoFreeGpu) as err:
        gpus.GpuPool([]).acquire("a/", 1)
    assert "this machine has no GPU" in str(err.value)


def test_gpu_restore_after_restart():
    pool = gpus.GpuPool([0, 1])
    pool.restore("alice/", [1])
    assert pool.acquire("bob/", 1) == [0]
    assert pool.free() == []


def test_shared_gpu_pool_is_one_pool_for_two_processes(tmp_path):
    """The hub and the Dask Gateway each open the pool file; a GPU one of them holds is not free for the other,
    and eight processes racing for four GPUs get each GPU once."""
    import subprocess
    import sys

    path = tmp_path / "gpus.json"
    hub, gateway = gpus.SharedGpuPool([0, 1, 2, 3], path), gpus.SharedGpuPool([0, 1, 2, 3], path)
    assert hub.acquire("server:alice/", 1) == [0]
    assert gateway.acquire("dask:c1/w1", 2) == [1, 2]
    assert hub.free() == [3] and hub.held_by("dask:c1/w1") == [1, 2]
    gateway.acquire("dask:c1/w2", 1)
    with pytest.raises(gpus.NoFreeGpu, match=r"only 0 of 4 are free \(4 in use by other servers or Dask workers\)"):
        hub.acquire("server:bob/", 1)
    assert gateway.release_matching("dask:", keep={"dask:c1/w2"}) == ["dask:c1/w1"]
    assert hub.acquire("server:bob/", 2) == [1, 2]
    assert hub.release_matching("server:") == ["server:alice/", "server:bob/"]
    assert gateway.owners() == {3: "dask:c1/w2"}
    gateway.release("dask:c1/w2")
    assert hub.free() == [0, 1, 2, 3]

    race = ("import sys, time; from posehub import gpus\n"
            "p = gpus.SharedGpuPool([0, 1, 2, 3], sys.argv[1])\n"
            "time.sleep(float(sys.argv[3]))\n"
            "try: print(p.acquire(sys.argv[2], 1)[0])\n"
            "except gpus.NoFreeGpu: print('none')\n")
    start = 0.5
    procs = [subprocess.Popen([sys.executable, "-c", race, str(path), f"dask:c/w{i}", str(start)],
                              stdout=subprocess.PIPE, text=True) for i in range(8)]
    got = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert got == ["0", "1", "2", "3", "none", "none", "none", "none"]
    assert sorted(hub.owners()) == [0, 1, 2, 3]


def test_shared_gpu_pool_unreadable_file_counts_as_empty(tmp_path):
    path = tmp_path / "gpus.json"
    path.write_text("not json")
    assert gpus.SharedGpuPool([0], path).acquire("server:alice/", 1) == [0]
    assert '"0": "server:alice/"' in path.read_text()


def test_parse_nvidia_smi():
    out = (
        "GPU 0: NVIDIA H200 (UUID: GPU-1234)\n"
        "GPU 1: NVIDIA H200 (UUID: GPU-5678)\n"
        "  MIG 1g.18gb Device 0: (UUID: MIG-aaaa)\n"
    )
    assert gpus.parse_nvidia_smi_list(out) == [0, 1]
    assert gpus.devices_from_config([3, 5]) == [3, 5]


def test_bucket_layout(tmp_path):
    c = cfg(
        hub={"state_dir": str(tmp_path / "state"), "data_dir": str(tmp_path)},
        buckets={
            "shared": [{"name": "openfield-demo"}, {"name": "lab-raw", "read_only": False, "groups": ["staff"]}],
            "home": {"name": "posehub-home"},
        },
    )
    alice = buckets.local_layout(c, "alice", [])
    assert [(link.path, link.read_only) for link in alice] == [("buckets/openfield-demo", True), ("home-bucket", False)]
    assert alice[-1].target == tmp_path / "buckets" / "posehub-home" / "alice"
    bob = buckets.local_layout(c, "bob", ["staff"])
    assert [link.path for link in bob] == ["buckets/openfield-demo", "buckets/lab-raw", "home-bucket"]
    home = tmp_path / "homes" / "alice"
    home.mkdir(parents=True)
    workspace.prepare(c, "alice", [], home)
    workspace.prepare(c, "alice", [], home)  # idempotent
    assert (home / "home-bucket").resolve() == tmp_path / "buckets" / "posehub-home" / "alice"
    assert (home / "buckets" / "openfield-demo").resolve() == tmp_path / "buckets" / "openfield-demo"
