"""DeepLabCut 3 (PyTorch engine): a ResNet-50 heatmap model, from ImageNet weights, from scratch or from a snapshot.

DeepLabCut's ``train_network`` fetches ImageNet weights from the Hugging Face
hub unless it is given a snapshot; with no network that fails. So PoseHub
builds the model itself, saves it as the starting snapshot and trains from
there: with the backbone's ImageNet weights from the file the pose image
carries (``weights: imagenet``, see :mod:`posehub.pose.weights`), or with
random weights (``weights: scratch``); ``auto`` (the default) is ``imagenet``
where the image has the file and ``scratch`` otherwise. It can also start from
a ``.pt`` snapshot the lab provides (``weights: /path/to/snapshot.pt``). The
run record says which, with the weights file's SHA-256.

The labels become a DeepLabCut project in the run folder (``config.yaml``,
``labeled-data/posehub/CollectedData_<scorer>.csv/.h5``, the frames), with
PoseHub's split passed as DeepLabCut's train/test indices, so the project
opens in DeepLabCut itself as well.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from .. import weights
from ..labels import Labels
from ..split import Split
from .base import Model, Prediction, Trainer, TrainerError, device as _device
from ._files import LogWatcher, local_frames

VIDEO = "posehub"


def project_config(project: Path, labels: Labels, width: int, height: int, train_fraction: float) -> dict:
    """DeepLabCut's config.yaml for a single-animal project holding PoseHub's labels."""
    return {
        "Task": "posehub", "scorer": labels.scorer, "date": "posehub", "multianimalproject": False,
        "identity": None, "project_path": str(project), "engine": "pytorch",
        "video_sets": {str(project / "videos" / f"{VIDEO}.mp4"): {"crop": f"0, {width}, 0, {height}"}},
        "bodyparts": list(labels.bodyparts), "start": 0, "stop": 1, "numframes2pick": 20,
        "skeleton": [list(e) for e in labels.skeleton], "skeleton_color": "black", "pcutoff": 0.6, "dotsize": 8,
        "alphavalue": 0.7, "colormap": "rainbow", "TrainingFraction": [train_fraction], "iteration": 0,
        "default_net_type": "resnet_50", "default_augmenter": "default", "snapshotindex": -1,
        "detector_snapshotindex": -1, "batch_size": 8, "detector_batch_size": 1, "cropping": False,
        "x1": 0, "x2": width, "y1": 0, "y2": height, "corner2move2": [50, 50], "move2corner": True,
        "SuperAnimalConversionTables": None,
    }


class DLCTrainer(Trainer):
    name = "dlc"
    defaults = {
        "epochs": 2,  # CI-sized; `full` is what the comparison with the study uses
        "net_type": "resnet_50",
        "batch_size": 8,
        "crop": 256,  # training crops of crop x crop pixels around the animal
        "learning_rate": 5e-4,
        "weights": "auto",  # imagenet where the image carries the weights, else scratch; or a local .pt snapshot
        "device": "auto",
    }
    full = {"epochs": 200, "net_type": "resnet_50", "batch_size": 8, "crop": 448, "learning_rate": 5e-4}

    def check(self, p):
        w = p["weights"]
        if w == "imagenet":
            try:
                weights.locate(p["net_type"])
            except weights.WeightsError as e:
                raise TrainerError(f"dlc: {e}") from None
        elif w not in ("auto", "scratch") and not Path(str(w)).is_file():
            raise TrainerError(f"dlc: weights {w!r} is none of 'auto', 'imagenet', 'scratch' nor a local .pt file")

    def train(self, labels, split: Split, workdir, params=None, seed=0, progress=None) -> Model:
        p = self.params(params)
        os.environ.setdefault("DLClight", "True")  # no GUI imports
        import torch
        import deeplabcut
        from deeplabcut.core.engine import Engine
        from deeplabcut.pose_estimation_pytorch.models import PoseModel
        from deeplabcut.utils import auxiliaryfunctions as aux

        t0 = time.perf_counter()
        workdir = Path(workdir)
        project = workdir / "project"
        folder = project / "labeled-data" / VIDEO
        folder.mkdir(parents=True, exist_ok=True)
        # frames in PoseHub's order, so that DeepLabCut's row indices are PoseHub's frame indices
        files = local_frames(labels, workdir / "frames")
        names = []
        for i, src in enumerate(files):
            dst = folder / f"img{i:05d}{src.suffix or '.png'}"
            if not dst.exists():
                os.link(src, dst) if src.stat().st_dev == folder.stat().st_dev else dst.write_bytes(src.read_bytes())
            names.append(f"labeled-data/{VIDEO}/{dst.name}")
        flat = Labels(labels.bodyparts, names, labels.points, str(project), labels.scorer)
        (folder / f"CollectedData_{labels.scorer}.csv").write_text(flat.to_dlc_csv())
        h, w = labels.read_image(0).shape[:2]
        frac = round(len(split.train) / len(labels), 2)
        config = project / "config.yaml"
        aux.write_config(str(config), project_config(project, labels, w, h, frac))
        deeplabcut.convertcsv2h5(str(config), userfeedback=False, scorer=labels.scorer)
        deeplabcut.create_training_dataset(str(config), Shuffles=[1], trainIndices=[list(split.train)],
                                           testIndices=[list(split.test)], net_type=p["net_type"],
                                           engine=Engine.PYTORCH, userfeedback=False)
        cfg = aux.read_config(str(config))
        train_dir = project / aux.get_model_folder(frac, 1, cfg, engine=Engine.PYTORCH) / "train"
        pose_cfg = train_dir / "pytorch_config.yaml"
        start = p["weights"]
        if start == "auto":
            start = "imagenet" if weights.available(p["net_type"]) else "scratch"
        if start in ("imagenet", "scratch"):
            torch.manual_seed(int(seed))  # the heads (and, from scratch, the backbone) start from random weights
            model = PoseModel.build(aux.read_plainconfig(str(pose_cfg))["model"], pretrained_backbone=False)
            said = "scratch (random init)"
            if start == "imagenet":
                try:
                    f, b = weights.locate(p["net_type"]), weights.backbone(p["net_type"])
                    weights.load_into(model.backbone.model, f, b.timm_name)
                except weights.WeightsError as e:
                    raise TrainerError(f"dlc: {e}") from None
                said = f"imagenet ({b.timm_name}, {f}, sha256 {weights.sha256(f)})"
            init = train_dir / f"init-{start}.pt"
            torch.save({"model": model.state_dict()}, init)
            del model
        else:
            init, said = Path(start), f"from {start}"
        updates = {
            "runner.eval_interval": p["epochs"] + 1,  # PoseHub evaluates with its own metric
            "runner.optimizer.params.lr": p["learning_rate"],
            "data.train.crop_sampling.width": p["crop"],
            "data.train.crop_sampling.height": p["crop"],
            "train_settings.seed": int(seed),
            "train_settings.dataloader_workers": 0,
        }
        with LogWatcher((train_dir, "learning_stats.csv"), progress, p["epochs"]):
            deeplabcut.train_network(str(config), shuffle=1, trainingsetindex=0, device=_device(p),
                                     epochs=p["epochs"], save_epochs=p["epochs"], batch_size=p["batch_size"],
                                     display_iters=50, snapshot_path=str(init), pytorch_cfg_updates=updates)
        snap = latest_snapshot(train_dir)
        return Model("dlc", workdir, list(labels.bodyparts),
                     {"pose_config": str(pose_cfg.relative_to(workdir)), "snapshot": str(snap.relative_to(workdir)), "params": p, "seed": int(seed),
                      "weights": said,
                      "train_s": time.perf_counter() - t0, "train_frames": len(split.train),
                      "frames_seen": p["epochs"] * len(split.train),
                      "device": _device(p)})

    def predict(self, model: Model, images: list[np.ndarray]) -> Prediction:
        from deeplabcut.pose_estimation_pytorch.apis.utils import get_inference_runners

        p = model.info.get("params", self.defaults)
        k = len(model.bodyparts)
        root = Path(model.path)
        runner, _ = get_inference_runners(model_config=str(root / model.info["pose_config"]),
                                          snapshot_path=str(root / model.info["snapshot"]),
                                          max_individuals=1, num_bodyparts=k, num_unique_bodyparts=0,
                                          batch_size=p["batch_size"], device=_device(p))
        out = runner.inference([np.asarray(im) for im in images])
        points = np.full((len(images), k, 2), np.nan)
        scores = np.zeros((len(images), k))
        for i, r in enumerate(out):
            bp = np.asarray(r["bodyparts"])  # (individuals, bodyparts, 3): x, y, score
            if bp.size:
                points[i] = bp[0, :, :2]
                scores[i] = np.nan_to_num(bp[0, :, 2])
        return Prediction(points, scores)


def latest_snapshot(train_dir: Path) -> Path:
    snaps = []
    for f in train_dir.glob("snapshot-*.pt"):
        m = re.search(r"(\d+)\.pt$", f.name)
        if m and "detector" not in f.name:
            snaps.append((int(m.group(1)), "best" not in f.name, f))
    if not snaps:
        raise TrainerError(f"dlc: training ended without a snapshot in {train_dir}")
    return max(snaps)[2]
