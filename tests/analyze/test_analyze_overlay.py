"""The optional overlay video: each body part drawn where the model put it (run in the pose environment,
which has OpenCV and imageio's ffmpeg), and the plan's checks of ``overlay``."""

import json
import subprocess
import textwrap

import pytest

from posehub.analyze.plan import AnalyzeError, make_plan, output_names

CODE = textwrap.dedent("""
    import json, sys
    import cv2, imageio.v2 as iio, numpy as np
    from posehub.analyze.outputs import COLORS, overlay_video
    src, dest = sys.argv[1], sys.argv[2]
    w = iio.get_writer(src, fps=15, codec="libx264", quality=9, macro_block_size=1)
    for i in range(12):
        w.append_data(np.full((96, 128, 3), 40, np.uint8))
    w.close()
    points = np.array([[[20.0 + i, 30.0], [90.0, 60.0]] for i in range(12)])
    points[5, 0] = np.nan                       # frame 5: the snout not found
    scores = np.tile([0.9, 0.2], (12, 1))       # the tail base below the threshold: a ring
    n = overlay_video(src, points, scores, dest, 0.5)
    cap = cv2.VideoCapture(dest)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB).astype(int))
    def dist(px, color):
        return float(np.abs(px - np.array(color)).max())
    print("OUT=" + json.dumps({
        "written": n, "read": len(frames), "fps": cap.get(cv2.CAP_PROP_FPS),
        "dot": dist(frames[3][30, 23], COLORS[0]),              # the snout's dot, moved with the frame
        "no_dot": dist(frames[5][30, 25], (40, 40, 40)),         # not found: nothing drawn
        "ring_centre": dist(frames[3][60, 90], (40, 40, 40)),    # low confidence: the centre stays
        "ring_edge": dist(frames[3][60, 94], COLORS[1]),
    }))
""")


def test_overlay_draws_dots_and_rings(pose_python, tmp_path):
    r = subprocess.run([str(pose_python), "-c", CODE, str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4")],
                       capture_output=True, text=True, timeout=180)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("OUT=")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    out = json.loads(lines[-1][4:])
    assert out["written"] == out["read"] == 12 and out["fps"] == pytest.approx(15, abs=0.5)
    assert out["dot"] < 40, out  # H.264 is lossy: close to the body part's colour
    assert out["no_dot"] < 20 and out["ring_centre"] < 20, out
    assert out["ring_edge"] < 90, out


def test_overlay_is_a_file_of_the_plan_and_checked(tmp_path):
    assert output_names("m3v1", "sleap", overlay=True)["overlay"] == "m3v1.overlay.mp4"
    assert "overlay" not in output_names("m3v1", "sleap")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text(json.dumps({"framework": "sleap", "bodyparts": ["snout"]}))
    (tmp_path / "v.mp4").write_bytes(b"x")
    plan = make_plan(run, tmp_path / "v.mp4", probe=lambda p: 5, overlay=True)
    assert plan.videos[0].files["overlay"].endswith("v.overlay.mp4") and plan.params["overlay"] is True
    with pytest.raises(AnalyzeError, match="overlay must be True or False, got 'yes'"):
        make_plan(run, tmp_path / "v.mp4", probe=lambda p: 5, overlay="yes")
