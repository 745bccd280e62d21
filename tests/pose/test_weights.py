"""DeepLabCut's ImageNet weights carried by the pose image (posehub.pose.weights): fetched once, loaded offline.

The real file (timm's resnet50_gn.a1h_in1k, 100 MB) comes from the Hugging Face hub, which this machine cannot
reach. The tests serve a stand-in of the same architecture (timm's model with its own random weights, saved as
the hub publishes it, fc included) from a local HTTP server named by HF_ENDPOINT: the download, the checks, the
loading into DeepLabCut's backbone and the record are the real code; only the numbers in the file differ.
"""

import functools
import http.server
import threading
import urllib.error
from pathlib import Path

import pytest
from poseenv import run_pose

from posehub.pose import trainers, weights

STANDINS = """
import json, sys, timm
from pathlib import Path
from safetensors.torch import save_file
root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path('served')
for repo, arch in [("timm/resnet50_gn.a1h_in1k", "resnet50_gn"), ("wrong/resnet18", "resnet18")]:
    d = root / repo / "resolve" / "main"
    d.mkdir(parents=True, exist_ok=True)
    m = timm.create_model(arch, pretrained=False)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(d / "model.safetensors"))
(root / "timm/broken/resolve/main").mkdir(parents=True)
(root / "timm/broken/resolve/main/model.safetensors").write_bytes(b"<html>a proxy's login page</html>")
print(json.dumps({"ok": True}))
"""


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A stand-in of the Hugging Face hub on loopback, and an empty weights folder."""
    run_pose(STANDINS, tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.server_port}")
    monkeypatch.setenv("POSEHUB_WEIGHTS_DIR", str(tmp_path / "weights"))
    yield tmp_path
    srv.shutdown()


def test_missing_weights_are_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHUB_WEIGHTS_DIR", str(tmp_path / "none"))
    t = trainers.get("dlc")()
    with pytest.raises(trainers.TrainerError) as e:
        t.params({"weights": "imagenet"})
    assert str(e.value).startswith("dlc: DeepLabCut's ImageNet weights for resnet_50 (timm's resnet50_gn.a1h_in1k) "
                                   f"are not in this environment (looked for {tmp_path / 'none'}")
    assert "`make weights`" in str(e.value) and "python -m posehub.pose.weights install FILE" in str(e.value)
    assert 'weights: "scratch"' in str(e.value)
    with pytest.raises(trainers.TrainerError, match="none of 'auto', 'imagenet', 'scratch' nor a local .pt file"):
        t.params({"weights": "imagnet"})
    with pytest.raises(trainers.TrainerError, match=r"no ImageNet weights are known for net_type 'resnet_101'"):
        t.params({"weights": "imagenet", "net_type": "resnet_101"})
    assert t.params({})["weights"] == "auto" and not (tmp_path / "none").exists()
    assert weights.main(["where"]) == 1


def test_fetch_offline_says_so_and_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHUB_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)

    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(weights.WeightsError) as e:
        weights.fetch(say=lambda m: None, opener=offline)
    assert str(e.value).startswith("cannot download https://huggingface.co/timm/resnet50_gn.a1h_in1k/resolve/main/"
                                   "model.safetensors: [Errno -3] Temporary failure in name resolution. DeepLabCut "
                                   "can still train from random weights")
    assert list((tmp_path / "w").iterdir()) == []


def test_fetch_checks_load_and_record(served, openfield):
    """Fetch from the served copy; a wrong or broken file is refused and nothing is kept; DeepLabCut then
    trains from the file (weights imagenet, and auto picks it), its backbone starting from exactly those
    tensors, and the record names the file and its hash."""
    code = """
import json, os
from pathlib import Path
import numpy as np
from safetensors.torch import load_file
import torch
from posehub.pose import weights, load_labels, split, train_and_evaluate

said = []
out = {"missing_before": weights.available("resnet_50")}
for repo in ("wrong/resnet18", "timm/broken"):
    b = weights.Backbone("resnet_50", "resnet50_gn.a1h_in1k", repo)
    weights.BACKBONES["resnet_50"] = b
    try:
        weights.fetch(say=said.append)
    except weights.WeightsError as e:
        out[repo] = str(e)
weights.BACKBONES["resnet_50"] = weights.Backbone("resnet_50", "resnet50_gn.a1h_in1k", "timm/resnet50_gn.a1h_in1k")
out["kept_after_refusals"] = sorted(os.listdir(weights.weights_dir()))
f = weights.fetch(say=said.append)
out["said"] = said
out["file"] = str(f)
out["again"] = []
weights.fetch(say=out["again"].append)

labels = load_labels(DATA).subset(range(12))
s = split(labels, 0.75, 0)
tiny = {"epochs": 1, "crop": 128, "batch_size": 4, "device": "cpu"}
for w in ("imagenet", "auto"):
    r = train_and_evaluate(labels, "dlc", params={**tiny, "weights": w}, split=s, workdir=Path("run-" + w))
    init = next(Path("run-" + w).rglob("init-imagenet.pt"))
    start = torch.load(init, map_location="cpu")["model"]
    served = load_file(str(f))
    same = all(torch.equal(start["backbone.model." + k], v) for k, v in served.items() if not k.startswith("fc."))
    out[w] = {"weights": r.record["weights"], "same": same, "finite": bool(np.isfinite(r.metrics["all"]["mean_px"]))}
print(json.dumps(out))
"""
    out = run_pose(code.replace("DATA", repr(str(openfield))), served)
    assert out["missing_before"] is False
    assert "wrong/resnet18/resolve/main/model.safetensors did not give resnet50_gn.a1h_in1k weights, nothing was " \
           "kept: " in out["wrong/resnet18"]
    assert "does not hold resnet50_gn.a1h_in1k weights: 99 missing (layer1.0.bn3.bias" in out["wrong/resnet18"]
    assert "; 60 unexpected (bn1.num_batches_tracked" in out["wrong/resnet18"]
    assert "; 17 of another shape (layer1.0.conv1.weight" in out["wrong/resnet18"]
    assert "is not a readable .safetensors file" in out["timm/broken"]
    assert out["kept_after_refusals"] == []
    assert out["said"][0].startswith("downloading resnet50_gn.a1h_in1k from http://127.0.0.1:")
    assert out["said"][-2].endswith("(100 %)") and "sha256" in out["said"][-1]
    assert out["again"] == [f"resnet50_gn.a1h_in1k: already there ({out['file']})"]
    sha = weights.sha256(Path(out["file"]))
    for w in ("imagenet", "auto"):
        assert out[w]["weights"] == f"imagenet (resnet50_gn.a1h_in1k, {out['file']}, sha256 {sha})"
        assert out[w]["same"] and out[w]["finite"]


def test_benchmark_refuses_missing_weights_before_training(tmp_path):
    """bench/pose_openfield.py checks every tool's settings before the first one trains (for hours on a GPU)."""
    import os
    import subprocess

    from poseenv import POSE_PY, REPO

    env = {**os.environ, "POSEHUB_WEIGHTS_DIR": str(tmp_path / "none")}
    r = subprocess.run([str(POSE_PY), str(REPO / "bench" / "pose_openfield.py"), "--dlc-weights", "imagenet",
                        "--workdir", str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: dlc: DeepLabCut's ImageNet weights for resnet_50" in r.stderr and "`make weights`" in r.stderr
    assert "training with" not in r.stdout and not (tmp_path / "work").exists()


def test_install_a_file_downloaded_elsewhere(served):
    """Where the machine cannot reach the hub (this one, the GPU machines of CI), a copy fetched elsewhere is
    installed after the same check; a wrong file or a missing one is refused and nothing is kept."""
    import subprocess

    from poseenv import POSE_PY

    def install(f):
        return subprocess.run([str(POSE_PY), "-m", "posehub.pose.weights", "install", str(f)], capture_output=True,
                              text=True, timeout=300)

    wrong = install(served / "served/wrong/resnet18/resolve/main/model.safetensors")
    assert wrong.returncode == 2 and "did not give resnet50_gn.a1h_in1k weights, nothing was kept" in wrong.stderr
    missing = install(served / "nowhere.safetensors")
    assert missing.returncode == 2 and f"error: {served / 'nowhere.safetensors'}: no such file (download " \
                                       "http://127.0.0.1:" in missing.stderr
    assert not (served / "weights").exists() or list((served / "weights").iterdir()) == []
    good = install(served / "served/timm/resnet50_gn.a1h_in1k/resolve/main/model.safetensors")
    kept = served / "weights" / "resnet50_gn.a1h_in1k.safetensors"
    assert good.returncode == 0 and f"resnet50_gn.a1h_in1k: {kept} (sha256 " in good.stdout
    assert kept.read_bytes() == (served / "served/timm/resnet50_gn.a1h_in1k/resolve/main/model.safetensors").read_bytes()
    assert weights.main(["where"]) == 0
