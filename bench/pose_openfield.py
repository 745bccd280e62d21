#!/usr/bin/env python3
"""SLEAP vs DeepLabCut on DeepLabCut's open-field example, as in the study (SLEAP 1.96 px, DLC 3.44 px).

Trains both tools with PoseHub's adapters on the same seeded 80/20 split of the
116 labelled frames, with the full settings of each trainer (``Trainer.full``,
the values notebooks 02 and 03 name for a GPU), evaluates on the 23 held-out
frames and prints the test error in pixels per body part and overall, beside
the study's figures, and training throughput (training frames per second:
frames the network was trained on, augmented copies included, over the
training time). Targets: both <= 3.0 px, SLEAP <= 2.0 px.

DeepLabCut starts from the ImageNet weights the pose image carries (as the
study's DeepLabCut did) when they are there (``make weights`` on one machine),
else from random weights; ``--dlc-weights`` chooses, and the figures say which.

Run it in the pose image's environment, on a machine with an NVIDIA GPU:

    .envs/pose/bin/python bench/pose_openfield.py [--tools sleap dlc] [--json out.json]
    .envs/pose/bin/python bench/pose_openfield.py --quick     # a few epochs, to check the pipeline on a CPU

Exit status: 0 when the targets are met (always 0 with --quick, which measures nothing comparable).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "extensions"))

from posehub.pose import load_labels, split, trainers, train_and_evaluate  # noqa: E402
from posehub.pose.show import STUDY_PX  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "openfield"
TARGET = {"sleap": 2.0, "dlc": 3.0}
QUICK = {"sleap": {"epochs": 2}, "dlc": {"epochs": 1, "crop": 192}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tools", nargs="+", default=["sleap", "dlc"], choices=["sleap", "dlc"])
    ap.add_argument("--data", default=str(DATA), help="a DeepLabCut project folder (default: ../shared/data/openfield)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline, measures nothing")
    ap.add_argument("--dlc-weights", default="auto",
                    help="DeepLabCut's start: auto (imagenet where the image carries it, else scratch), imagenet, "
                         "scratch, or a .pt snapshot")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no GPU)"
    labels = load_labels(args.data)
    s = split(labels, 0.8, args.split_seed)
    print(f"open-field: {len(labels)} frames, {len(s.train)} train / {len(s.test)} test (split seed {args.split_seed}); "
          f"device: {device}", flush=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="posehub-bench-"))
    plan = {}
    for fw in args.tools:  # every tool's settings are checked before the first one trains for hours
        params = dict(QUICK[fw] if args.quick else trainers.get(fw).full)
        if fw == "dlc":
            params["weights"] = args.dlc_weights
        try:
            trainers.get(fw)().params(params)
        except trainers.TrainerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        plan[fw] = params
    results = {}
    for fw, params in plan.items():
        print(f"\n{fw}: training with {params}", flush=True)
        t0 = time.perf_counter()
        r = train_and_evaluate(labels, fw, params=params, seed=args.seed, split=s, workdir=work / fw,
                               progress=lambda e, fw=fw: print(f"  {fw} epoch {e['epoch']}/{e['epochs']}"
                                                               + (f" loss {e['loss']:.4g}" if e['loss'] is not None else ""),
                                                               flush=True))
        wall = time.perf_counter() - t0
        tm = r.record["timings_s"]
        results[fw] = {"params": r.record["params"], "weights": r.record["weights"], "device": r.record["device"],
                       "wall_s": round(wall, 1),
                       "train_s": tm["train"], "train_frames_per_s": tm["train_frames_per_s"],
                       "test_mean_px": r.metrics["all"]["mean_px"], "test_rmse_px": r.metrics["all"]["rmse_px"],
                       "per_bodypart_mean_px": {bp: m["mean_px"] for bp, m in r.metrics["per_bodypart"].items()},
                       "run_dir": str(r.local_dir)}
    print(f"\n{'tool':<8}{'test mean px':>14}{'RMSE px':>10}{'study px':>10}{'target':>8}{'train fr/s':>12}{'train s':>9}")
    met = True
    for fw, x in results.items():
        ok = math.isfinite(x["test_mean_px"]) and x["test_mean_px"] <= TARGET[fw]
        met &= ok
        print(f"{fw:<8}{x['test_mean_px']:>14.2f}{x['test_rmse_px']:>10.2f}{STUDY_PX[fw]:>10.2f}"
              f"{('<=' + str(TARGET[fw])):>8}{x['train_frames_per_s']:>12.1f}{x['train_s']:>9.0f}  "
              + ("met" if ok else "NOT MET"))
        print("        per body part: " + ", ".join(f"{bp} {v:.2f}" for bp, v in x["per_bodypart_mean_px"].items()))
        print(f"        started from: {x['weights']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "quick": args.quick, "results": results}, indent=1))
    if args.quick:
        print("\n(--quick: tiny settings, the errors are not comparable with the study)")
        return 0
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
