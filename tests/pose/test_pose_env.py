"""posehub.pose in the pose image's environment (sleap-io, SLEAP, DeepLabCut), without training."""

from poseenv import run_pose


def test_slp_round_trip(tmp_path, openfield):
    """DeepLabCut labels -> a SLEAP .slp with embedded frames -> PoseHub's labels: the same keypoints and pixels."""
    code = f"""
import json, numpy as np
from posehub.pose import load_labels
from posehub.pose.trainers.sleap import to_sleap
from posehub.pose.trainers._files import local_frames
from pathlib import Path
lab = load_labels({str(openfield / "labeled-data/m4s1/CollectedData_Pranav.csv")!r}).subset(range(0, 116, 10))
to_sleap(lab, local_frames(lab, Path("f"))).save("x.pkg.slp", embed="user", verbose=False)
back = load_labels("x.pkg.slp")
print(json.dumps({{"bodyparts": back.bodyparts, "n": len(back),
    "same_points": bool(np.allclose(back.points, lab.points, equal_nan=True)),
    "same_pixels": bool((back.read_image(3) == lab.read_image(3)).all()),
    "frames_dir": back.root}}))
"""
    got = run_pose(code, tmp_path)
    assert got["bodyparts"] == ["snout", "leftear", "rightear", "tailbase"] and got["n"] == 12
    assert got["same_points"] and got["same_pixels"]
    assert got["frames_dir"].endswith("x.pkg.frames")


def test_bad_slp_file(tmp_path):
    code = """
import json
from posehub.pose import load_labels, LabelsError
open("bad.slp", "w").write("not hdf5")
try:
    load_labels("bad.slp")
except LabelsError as e:
    print(json.dumps({"error": str(e)}))
"""
    assert run_pose(code, tmp_path)["error"].startswith("bad.slp: not a readable SLEAP file")


def test_the_tools_import_offline(tmp_path):
    code = """
import json, os
os.environ["DLClight"] = "True"
import torch, sleap_nn, sleap_io, deeplabcut
from importlib.metadata import version
print(json.dumps({k: version(k) for k in ("torch", "sleap", "sleap-nn", "sleap-io", "deeplabcut")}))
"""
    v = run_pose(code, tmp_path)
    assert v["sleap"].startswith("1.6.") and v["deeplabcut"].startswith("3.0.")
    assert v["sleap-nn"] and v["torch"]
