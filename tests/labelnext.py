"""An ensemble's results on the open-field data, for tests that need one quickly (the desktop's browser test).

The results are built by the real ``posehub.ensemble.results`` from members' outcomes made here without training:
on the split's test frames each member predicts the labels plus its own noise; on frames sampled evenly from the
open-field video each member puts the four body parts around a common point with its own spread, larger on
later frames, so that ``label_next`` ranks the frames. tests/pose/test_labelling.py makes projects from an
ensemble of trained models.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from posehub.ensemble.member import video_indices
from posehub.ensemble.results import build, write
from posehub.ensemble.spec import validate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "openfield"
LABELS = SHARED / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"
VIDEO = SHARED / "videos" / "m3v1mp4.mp4"
VIDEO_FRAME_COUNT = 2330  # frames in the open-field video


def openfield_ensemble(dest: Path, owner=None, frames: int = 12, members: int = 3) -> Path:
    """Write an ensemble's results (ensemble.json, consensus.csv, label_next.csv) under ``dest``; chowned to
    ``owner`` (a pwd entry) when given. Returns ``dest``."""
    spec = validate(str(LABELS), "sleap", members, {"epochs": 1}, list(range(10, 10 + members)), dest=str(dest),
                    video=str(VIDEO), video_frames=frames, train_fraction=0.8, name=Path(dest).name)
    lab = spec.labels
    test_idx = list(spec.split.test)
    vidx = video_indices(frames, VIDEO_FRAME_COUNT)
    outcomes = []
    for m in range(members):
        rng = np.random.default_rng(100 + m)
        test = lab.points[test_idx] + rng.normal(0, 2.0, (len(test_idx), len(lab.bodyparts), 2))
        centre = np.array([[320.0, 240.0]])
        spread = np.linspace(1, 25, len(vidx))[:, None, None]
        offsets = np.array([[0, -12], [-8, -6], [8, -6], [0, 20]], dtype=float)[None]
        video = centre + offsets + rng.normal(0, 1, (len(vidx), len(lab.bodyparts), 2)) * spread
        err = float(np.nanmean(np.sqrt(((test - lab.points[test_idx]) ** 2).sum(-1))))
        outcomes.append({
            "status": "done", "seed": spec.seeds[m], "attempts": 1, "worker": f"tcp://127.0.0.1:{9000 + m}",
            "url": spec.member_dest(m), "metrics": {"all": {"mean_px": err, "rmse_px": err}},
            "predictions": {"test_frames": np.array(test_idx), "test_points": test,
                            "test_scores": np.full(test.shape[:-1], 0.9), "stride": np.array(1.0),
                            "video_frames": np.array(vidx), "video_points": video,
                            "video_scores": np.full(video.shape[:-1], 0.7)}})
    write(build(spec, outcomes))
    if owner is not None:
        for folder, dirs, files in os.walk(dest):
            for name in [folder, *(os.path.join(folder, f) for f in files)]:
                os.chown(name, owner.pw_uid, owner.pw_gid)
        above = []  # the folders made above it, below the nearest one of the owner's own (their home)
        for parent in Path(dest).parents:
            if parent.stat().st_uid == owner.pw_uid:
                for d in above:
                    os.chown(d, owner.pw_uid, owner.pw_gid)
                break
            above.append(parent)
    return Path(dest)
