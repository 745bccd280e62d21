"""Helpers the trainers share: frames as local files, a training log watched for progress."""

from __future__ import annotations

import csv
import shutil
import threading
from pathlib import Path

import numpy as np

from ..labels import Labels


def local_frames(labels: Labels, dest: Path) -> list[Path]:
    """A local file for each frame: the frame itself when it is on this machine, else a copy in ``dest``
    (frames read from a bucket). File names keep their order and stay unique."""
    out = []
    for i, name in enumerate(labels.frames):
        src = labels.frame_path(i)
        p = Path(src)
        if labels.fs is None and "://" not in src and p.is_file():
            out.append(p)
            continue
        target = dest / f"{i:05d}_{Path(name).name}"
        if not target.exists():
            dest.mkdir(parents=True, exist_ok=True)
            opener = labels.fs.open if labels.fs is not None else None
            if opener is None:
                import fsspec

                opener = lambda path, mode: fsspec.open(path, mode).open()  # noqa: E731
            with opener(src, "rb") as f, open(target.with_suffix(".part"), "wb") as o:
                shutil.copyfileobj(f, o)
            target.with_suffix(".part").rename(target)
        out.append(target)
    return out


def write_pngs(images: list[np.ndarray], dest: Path) -> list[Path]:
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = dest / f"img{i:05d}.png"
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


class LogWatcher:
    """Calls ``progress`` with each new row of a CSV training log (one row per epoch) while training runs."""

    def __init__(self, path_glob: tuple[Path, str], progress, epochs: int, interval: float = 1.0):
        self.folder, self.pattern = path_glob
        self.progress = progress
        self.epochs = epochs
        self.interval = interval
        self.seen = 0  # the last epoch reported
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.progress:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self._stop.set()
            self._thread.join(10)
            self.poll()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self):
        files = sorted(self.folder.glob(self.pattern))
        if not files:
            return
        try:
            with open(files[-1]) as f:
                rows = list(csv.DictReader(f))
        except (OSError, csv.Error):
            return
        for row in rows:
            epoch = _epoch(row)
            if epoch is None or epoch <= self.seen:
                continue
            self.seen = epoch
            loss = None
            for k in ("train/loss", "losses/train.total_loss", "train_loss", "loss", "val/loss"):
                try:
                    loss = float(row[k])
                    break
                except (KeyError, TypeError, ValueError):
                    continue
            self.progress({"epoch": min(epoch, self.epochs), "epochs": self.epochs, "loss": loss})


def _epoch(row: dict) -> int | None:
    """The 1-based epoch of a log row: sleap-nn's ``epoch`` counts from 0, DeepLabCut's ``step`` from 1."""
    try:
        if row.get("epoch") not in (None, ""):
            return int(float(row["epoch"])) + 1
        if row.get("step") not in (None, ""):
            return int(float(row["step"]))
    except ValueError:
        return None
    return None
