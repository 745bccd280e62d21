"""Train, evaluate and record one model: what notebooks and ensemble members call.

``train_and_evaluate`` checks everything it can before training (framework,
parameters, split), trains in a local folder, evaluates on the held-out
frames, writes ``split.json``, ``metrics.json`` and ``run.json`` (the record)
beside the model, and copies the run to its destination (the user's home
prefix, through ``posehub.storage``) when one is given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import record, trainers
from .labels import Labels
from .split import Split, split as make_split


@dataclass
class RunResult:
    framework: str
    model: trainers.Model
    metrics: dict
    record: dict
    split: Split
    local_dir: Path
    url: str = ""  # where the run was copied to


def train_and_evaluate(labels: Labels, framework: str, params: dict | None = None, seed: int = 0,
                       train_fraction: float = 0.8, split_seed: int = 0, workdir: str | Path | None = None,
                       dest: str | None = None, dest_fs=None, progress=None, split: Split | None = None) -> RunResult:
    trainer = trainers.get(framework)()
    p = trainer.params(params)
    s = split or make_split(labels, train_fraction, split_seed)
    local = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"posehub-{trainer.name}-"))
    local.mkdir(parents=True, exist_ok=True)
    (local / "split.json").write_text(s.to_json())
    inputs = {}
    for source in dict.fromkeys(x["source"] for x in labels.label_sets() if x["source"]):  # each merged set's file
        try:
            inputs[source] = record.file_sha256(source, labels.fs.open if labels.fs else None)
        except (OSError, ValueError):
            pass
    t0 = time.perf_counter()
    model = trainer.train(labels, s, local, p, seed, progress)
    train_s = time.perf_counter() - t0
    metrics = trainer.evaluate(model, labels, s)
    rec = record.make_record(framework=trainer.name, params=p, seed=seed, split=s, labels=labels, inputs=inputs,
                             weights=model.info.get("weights", ""), metrics=metrics,
                             device=model.info.get("device", ""),
                             timings={"train": round(train_s, 2), "predict_test": round(metrics["predict_s"], 2),
                                      "train_frames_per_s": round(model.info.get("frames_seen", len(s.train) * p["epochs"])
                                                                  / train_s, 2)})
    record.write(rec, local / "run.json")
    (local / "model.json").write_text(json.dumps({"framework": model.framework, "bodyparts": model.bodyparts,
                                                  "info": model.info}, indent=1, default=str))
    url = copy_run(local, dest, dest_fs) if dest else ""
    return RunResult(trainer.name, model, metrics, rec, s, local, url)


SKIP = {"frames", "__pycache__"}  # folders left out wherever they are: copies of the frames, caches
SKIP_FILES = ("*.pkg.slp", "init-*.pt")  # SLEAP's training labels with the frames embedded; DLC's starting weights
IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def skipped(rel: Path) -> bool:
    """Whether ``copy_run`` leaves out the file at ``rel`` (relative to the run folder): what training derived
    from the labels and can make again (frame copies, the frames embedded in SLEAP's ``train.pkg.slp``, the
    images DeepLabCut's project links under ``labeled-data``, DeepLabCut's starting weights, random or ImageNet's). The
    model (``model.json`` and the tool's model files), the record, the split and the metrics are kept."""
    rel = Path(rel)
    if set(rel.parts[:-1]) & SKIP or rel.name in SKIP:
        return True
    if any(rel.match(pattern) for pattern in SKIP_FILES):
        return True
    return "labeled-data" in rel.parts[:-1] and rel.suffix.lower() in IMAGES


def run_files(local: Path) -> list[Path]:
    """The files of a run folder that ``copy_run`` copies, relative to it."""
    local = Path(local)
    out = []
    for folder, dirs, files in os.walk(local):
        dirs[:] = sorted(d for d in dirs if d not in SKIP)
        for name in sorted(files):
            rel = (Path(folder) / name).relative_to(local)
            if not skipped(rel):
                out.append(rel)
    return out


def copy_run(local: Path, dest: str, fs=None) -> str:
    """Copy a run folder to ``dest`` (a local folder or a bucket URL), without what :func:`skipped` leaves
    out; :func:`load_model` reloads the model from the copy."""
    local = Path(local)
    files = run_files(local)
    protocols = fs.protocol if fs is not None and isinstance(fs.protocol, tuple) else (getattr(fs, "protocol", ""),)
    if (fs is None and "://" not in dest) or (fs is not None and {"file", "local"} & set(protocols)):
        target = Path(dest)
        target.mkdir(parents=True, exist_ok=True)
        for rel in files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local / rel, target / rel)
        return str(target)
    if fs is None:
        import fsspec

        fs = fsspec.core.url_to_fs(dest)[0]
    for rel in files:
        fs.put_file(str(local / rel), dest.rstrip("/") + "/" + rel.as_posix())
    return dest


def load_model(folder: str | Path) -> trainers.Model:
    """A trained model back from its run folder (``model.json``), for predicting later."""
    d = json.loads((Path(folder) / "model.json").read_text())
    return trainers.Model(d["framework"], Path(folder), d["bodyparts"], d["info"])
