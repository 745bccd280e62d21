"""SLEAP's confidence maps for the ensemble's consensus, and a run copied and reloaded (the pose environment).

sleap-nn places confidence-map cell (row, col) at image pixel (col * stride, row * stride), stride being
output_stride / input scale: its training targets are Gaussians sampled at ``arange(0, W, output_stride)``
and its decoding multiplies the peak's cell by output_stride and divides by the scale. The consensus
(:func:`posehub.ensemble.consensus.refine_peaks`) reads maps the same way, so one member's maps give that
member's keypoints back, up to the sub-pixel refinement (a parabola there, sleap-nn's integral regression
here).
"""

from poseenv import run_pose

TINY = {"epochs": 1, "scale": 0.25, "filters": 4, "max_stride": 8, "batch_size": 4, "augment": False,
        "validation_fraction": 0, "device": "cpu"}


def test_consensus_reads_sleap_nn_maps_as_sleap_nn_does(tmp_path):
    """Ideal maps (sleap-nn's own training targets, i.e. a well-trained model's output): sleap-nn's decoding
    and the consensus both find the keypoints, within a pixel of each other."""
    code = """
import json, numpy as np, torch
from sleap_nn.data.utils import make_grid_vectors
from sleap_nn.data.confidence_maps import make_confmaps
from sleap_nn.inference.ops.peaks import find_global_peaks
from posehub.ensemble.consensus import refine_peaks
out = {}
rng = np.random.default_rng(0)
for name, sigma, output_stride, scale in [("defaults", 2.5, 2, 0.5), ("full", 2.5, 2, 1.0), ("wide", 5.0, 4, 1.0)]:
    truth = rng.uniform(8, 110, (40, 4, 2)).astype(np.float32)  # model-input pixels
    xv, yv = make_grid_vectors(120, 160, output_stride)
    cms = make_confmaps(torch.from_numpy(truth), xv, yv, sigma)
    stride = output_stride / scale
    sleap, _ = find_global_peaks(cms, threshold=0.0, refinement="integral", integral_patch_size=5)
    cons, _ = refine_peaks(cms.numpy(), stride)
    err = lambda a, b: float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).max())
    out[name] = {"stride": stride, "between": err(sleap.numpy() * stride, cons),
                 "consensus_vs_truth": err(cons, truth / scale),
                 "half_cell_shifted": err(cons + stride / 2, truth / scale)}
print(json.dumps(out))
"""
    got = run_pose(code, tmp_path)
    for name, r in got.items():
        assert r["between"] < 1.0, (name, r)
        assert r["consensus_vs_truth"] < 0.5, (name, r)
        assert r["half_cell_shifted"] > r["stride"] / 3, (name, r)  # a (col + 0.5) * stride reading would be off


def test_sleap_confmaps_consensus_and_a_reloaded_copy(tmp_path, openfield):
    """A tiny SLEAP model (1 epoch, no validation frames): predict returns its confidence maps only when
    asked; the consensus of this one member's maps gives its keypoints back; its run folder, copied without
    train.pkg.slp, reloads and predicts the same."""
    code = f"""
import json, shutil, numpy as np
from pathlib import Path
from posehub.pose import load_labels
from posehub.pose.run import train_and_evaluate, load_model
from posehub.pose.trainers.sleap import SleapTrainer
from posehub.ensemble import consensus

lab = load_labels({str(openfield / "labeled-data/m4s1/CollectedData_Pranav.csv")!r}).subset(range(0, 116, 6))
r = train_and_evaluate(lab, "sleap", {TINY!r}, seed=1, workdir="run", dest="copy")
images = [lab.read_image(i) for i in range(0, 20, 2)]
t = SleapTrainer()
plain = t.predict(r.model, images)
with_maps = t.predict(r.model, images, confmaps=True)
t.refinement = "none"  # grid-aligned peaks: exactly a map cell times the stride
rough = t.predict(r.model, images, confmaps=True)
cm = rough.confmaps
n, k, h, w = cm.shape
row, col = np.divmod(cm.reshape(n, k, -1).argmax(-1), w)
grid = np.stack([col, row], -1) * rough.stride
found = np.isfinite(rough.points).all(-1)

def member(p):
    return {{"points": p.points, "scores": p.scores, "confmaps": p.confmaps, "stride": p.stride}}

cons = consensus.combine([member(rough)])
cons_refined = consensus.combine([member(with_maps)])
import sleap_io as sio
trained_on = len(sio.load_slp("run/model/labels_gt.train.0.slp"))  # what sleap-nn trained on

shutil.rmtree("run")  # the copy alone
copied = sorted(p.relative_to("copy").as_posix() for p in Path("copy").rglob("*") if p.is_file())
t2 = SleapTrainer()
t2.confmaps = True
again = t2.predict(load_model("copy"), images)
print(json.dumps({{
    "plain_confmaps": plain.confmaps is None, "shape": list(with_maps.confmaps.shape),
    "dtype": str(with_maps.confmaps.dtype), "stride": with_maps.stride, "image": list(images[0].shape[:2]),
    "same_points": bool(np.allclose(plain.points, with_maps.points, equal_nan=True)),
    "found": int(found.sum()), "grid_vs_sleap": float(np.abs(grid[found] - rough.points[found]).max()),
    "method": cons.method, "same_missing": bool((np.isnan(cons.points[..., 0]) == ~found).all()),
    "consensus_vs_member": float(np.nanmax(np.abs(cons.points - rough.points))),
    "refined_found": bool((np.isfinite(cons_refined.points).all(-1) == np.isfinite(with_maps.points).all(-1)).all()),
    "copied": copied, "reloaded_same": bool(np.allclose(again.points, with_maps.points, equal_nan=True)
                                            and np.allclose(again.confmaps, with_maps.confmaps)),
    "validation_fraction": r.record["params"]["validation_fraction"], "trained_on": trained_on,
    "train_frames": r.model.info["train_frames"]}}))
"""
    got = run_pose(code, tmp_path)
    assert got["validation_fraction"] == 0
    # 0 = every training frame (sleap-io would read a fraction of 1 - 0 = 1 as one frame)
    assert got["trained_on"] == got["train_frames"] > 1, got
    assert got["plain_confmaps"] and got["same_points"]
    assert got["image"] == [480, 640] and got["stride"] == 2 / 0.25  # output_stride / scale
    assert got["shape"] == [10, 4, 480 * 0.25 / 2, 640 * 0.25 / 2] and got["dtype"] == "float32"
    assert got["found"] > 0 and got["grid_vs_sleap"] < 1e-3  # sleap-nn's peak = argmax cell * stride, exactly
    assert got["method"] == "confmaps" and got["same_missing"] and got["refined_found"]
    assert got["consensus_vs_member"] <= got["stride"] / 2 + 1e-6  # within the sub-cell refinement
    assert "train.pkg.slp" not in got["copied"] and {"model.json", "model/best.ckpt", "model/training_config.yaml",
                                                      "run.json", "split.json"} <= set(got["copied"])
    assert got["reloaded_same"]
