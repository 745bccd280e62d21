"""SLEAP (its PyTorch backend, sleap-nn): a single-instance U-Net trained from scratch.

Nothing is downloaded: the U-Net starts from random (Kaiming) weights, which
is also what the SLEAP vs DeepLabCut study used for SLEAP. The labels go to
sleap-nn as a ``.slp`` file with the frames embedded (sleap-io); the model is
sleap-nn's own folder (``training_config.yaml``, ``best.ckpt``), so it opens in
SLEAP's GUI and command line as well.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..labels import Labels
from ..split import Split
from .base import Model, Prediction, Trainer, TrainerError, device as _device
from ._files import LogWatcher, local_frames, write_pngs


def to_sleap(labels: Labels, frame_files: list[Path]):
    """A ``sleap_io.Labels`` of the same frames and keypoints (NaN = not visible)."""
    import sleap_io as sio

    skeleton = sio.Skeleton(list(labels.bodyparts))
    video = sio.Video.from_filename([str(p) for p in frame_files])
    frames = [sio.LabeledFrame(video=video, frame_idx=i,
                               instances=[sio.Instance.from_numpy(labels.points[i], skeleton=skeleton)])
              for i in range(len(labels))]
    return sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton])


class SleapTrainer(Trainer):
    name = "sleap"
    defaults = {
        "epochs": 3,  # CI-sized; `full` is what the comparison with the study uses
        "scale": 0.5,  # input scaling (0.5 = half the frame size)
        "filters": 16,  # U-Net filters in the first block
        "max_stride": 16,
        "output_stride": 2,  # confidence maps at 1/2 the input
        "sigma": 2.5,  # Gaussian of the confidence maps, px
        "batch_size": 4,
        "learning_rate": 1e-3,
        "validation_fraction": 0.1,
        "augment": True,  # random rotations
        "steps_per_epoch": 0,  # 0 = one pass over the training frames
        "device": "auto",  # cuda when there is a GPU
    }
    full = {"epochs": 200, "scale": 1.0, "filters": 32, "max_stride": 16, "output_stride": 2, "sigma": 2.5,
            "batch_size": 4, "learning_rate": 1e-4, "steps_per_epoch": 200}
    may_be_zero = frozenset({"validation_fraction"})  # 0 = train on every training frame, no validation
    refinement = "integral"  # sleap-nn's sub-pixel refinement of the peaks: "integral" or "none"

    def check(self, p):
        if not 0 < p["scale"] <= 1:
            raise TrainerError(f"sleap: scale must be in (0, 1], got {p['scale']}")
        if not 0 <= p["validation_fraction"] < 1:
            raise TrainerError(f"sleap: validation_fraction must be in [0, 1), got {p['validation_fraction']}")

    def train(self, labels, split: Split, workdir, params=None, seed=0, progress=None) -> Model:
        p = self.params(params)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        import sleap_io  # noqa: F401 - a clear ImportError before anything is written
        from sleap_nn.train import train

        t0 = time.perf_counter()
        train_set = labels.subset(split.train)
        slp = workdir / "train.pkg.slp"
        to_sleap(train_set, local_frames(train_set, workdir / "frames")).save(str(slp), embed="user", verbose=False)
        os.environ.setdefault("WANDB_MODE", "disabled")
        run = "model"
        with LogWatcher((workdir / run, "training_log.csv"), progress, p["epochs"]):
            train(
                train_labels_path=[str(slp)],
                # 0: every training frame trains (and validates). Passed on as a fraction, sleap-io would read
                # 1 - 0 = 1 as a count: one frame.
                **({"validation_fraction": p["validation_fraction"]} if p["validation_fraction"] > 0
                   else {"use_same_data_for_val": True}),
                scale=p["scale"],
                backbone_config={"unet": {"filters": p["filters"], "max_stride": p["max_stride"],
                                          "output_stride": p["output_stride"]}},
                head_configs={"single_instance": {"confmaps": {"sigma": p["sigma"],
                                                               "output_stride": p["output_stride"]}}},
                init_weight="default",  # random (Kaiming) weights: nothing is downloaded
                batch_size=p["batch_size"],
                learning_rate=p["learning_rate"],
                max_epochs=p["epochs"],
                min_train_steps_per_epoch=1,
                **({"train_steps_per_epoch": p["steps_per_epoch"]} if p["steps_per_epoch"] else {}),
                trainer_accelerator="gpu" if _device(p).startswith("cuda") else "cpu",
                num_workers=0,
                save_ckpt=True,
                ckpt_dir=str(workdir),
                run_name=run,
                seed=int(seed),
                use_wandb=False,
                enable_progress_bar=False,
                geometry_aug="rotation" if p["augment"] else None,
            )
        model_dir = workdir / run
        if not (model_dir / "best.ckpt").exists():
            raise TrainerError(f"sleap: training ended without a checkpoint in {model_dir}")
        return Model("sleap", workdir, list(labels.bodyparts),
                     {"model_dir": run, "params": p, "seed": int(seed), "weights": "scratch (random init)",
                      "train_s": time.perf_counter() - t0, "train_frames": len(split.train),
                      "frames_seen": p["epochs"] * (p["steps_per_epoch"] * p["batch_size"] if p["steps_per_epoch"]
                                                    else round(len(split.train) * (1 - p["validation_fraction"]))),
                      "device": _device(p)})

    def _predictor(self, model: Model, p: dict):
        """sleap-nn's Predictor for ``model``, kept while the model, device and settings stay the same
        (``predict_frames`` calls ``predict`` once per batch)."""
        from sleap_nn.inference.predictor import Predictor

        folder = Path(model.path) / model.info["model_dir"]
        ckpt = folder / "best.ckpt"
        key = (str(folder), ckpt.stat().st_mtime_ns if ckpt.exists() else 0, _device(p), p["batch_size"],
               self.refinement)
        cached = getattr(self, "_cached_predictor", None)
        if cached is None or cached[0] != key:
            cached = (key, Predictor.from_model_paths([str(folder)], device=_device(p), batch_size=p["batch_size"],
                                                      peak_threshold=0.0, integral_refinement=self.refinement))
            self._cached_predictor = cached
        return cached[1]

    def predict(self, model: Model, images: list[np.ndarray], confmaps: bool | None = None) -> Prediction:
        """Keypoints (image pixels), their confidence-map peak values and, with ``confmaps`` (default:
        ``self.confmaps``), the maps themselves: ``(frames, bodyparts, H, W)`` float32, the network's raw
        output (trained towards Gaussians of peak 1, so a little outside [0, 1] here and there; far outside
        for a barely trained model), with ``stride`` = image pixels per map cell. sleap-nn places map cell
        (row, col) at image pixel ``(col * stride, row * stride)`` (no half-cell shift: output_stride, then
        the input scale undone), which is also how ``posehub.ensemble.consensus.refine_peaks`` reads maps."""
        import sleap_io as sio

        want = self.confmaps if confmaps is None else confmaps
        p = model.info.get("params", self.defaults)
        n, k = len(images), len(model.bodyparts)
        points = np.full((n, k, 2), np.nan)
        scores = np.zeros((n, k))
        maps = None
        strides = set()
        if not n:
            return Prediction(points, scores)
        predictor = self._predictor(model, p)
        with tempfile.TemporaryDirectory(prefix="posehub-sleap-") as tmp:
            video = sio.Video.from_filename([str(f) for f in write_pngs(images, Path(tmp))])
            outs = predictor.predict(video, make_labels=False, return_confmaps=bool(want))
            video.close()
        for out in outs:
            if out.pred_keypoints is None:
                continue
            idx = out.frame_indices.cpu().numpy().astype(int)
            pts = out.pred_keypoints.detach().cpu().numpy()[:, 0]  # (frames, bodyparts, 2): one instance
            vals = np.nan_to_num(out.pred_peak_values.detach().cpu().numpy()[:, 0].astype(float))
            points[idx] = pts
            scores[idx] = np.where(np.isfinite(pts).all(axis=-1), vals, 0.0)
            if want:
                info = out.preprocess_info
                eff = info.eff_scale.detach().cpu().numpy().reshape(-1)
                strides |= {round(float(info.output_stride) / float(info.input_scale) / float(e), 9) for e in eff}
                cm = out.pred_confmaps.detach().cpu().numpy().astype(np.float32, copy=False)
                if maps is None:
                    maps = np.zeros((n, *cm.shape[1:]), np.float32)
                maps[idx] = cm
        if not want:
            return Prediction(points, scores)
        if maps is None:
            raise TrainerError("sleap: sleap-nn returned no confidence maps")
        if len(strides) != 1:
            raise TrainerError(f"sleap: the images were resized differently (strides {sorted(strides)}); "
                               "predict images of one size at a time")
        return Prediction(points, scores, maps, strides.pop())
