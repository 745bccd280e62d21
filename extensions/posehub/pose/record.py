"""The record written beside every trained model: what it takes to trust and repeat a result.

``run.json`` holds the image (``POSEHUB_IMAGE``, set by the spawner and the
Dockerfiles) and a hash of the environment's exact package set (every
installed distribution and version, sorted: the same hash means the same
environment), the versions of the packages that matter, the parameters, the
seed, the data split, the labels (with ``sets``: the label sets they are made
of, one or each set put together by :func:`posehub.pose.labels.merge`, with
its frames and fingerprint), the hashes of the input files, how the network's
weights were initialised (from scratch, or which file) and the results.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata

KEY_PACKAGES = ("posehub", "numpy", "torch", "torchvision", "sleap-nn", "sleap-io", "deeplabcut", "dask",
                "distributed")


_LOCK: dict = {}


def _installed() -> list[str]:
    """``name==version`` of every installed distribution, sorted. Listing them takes most of a second; the
    list is kept while the folders on ``sys.path`` keep their modification times (installing or removing a
    package changes its folder's)."""
    stamp = []
    for entry in sys.path:
        try:
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    stamp = tuple(stamp)
    if _LOCK.get("stamp") != stamp:
        _LOCK["dists"] = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions()
                                 if d.metadata["Name"]})
        _LOCK["stamp"] = stamp
    return _LOCK["dists"]


def environment() -> dict:
    dists = _installed()
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if "posehub" not in versions:
        from .. import __version__

        versions["posehub"] = __version__
    return {
        "image": os.environ.get("POSEHUB_IMAGE", ""),
        "profile": os.environ.get("POSEHUB_PROFILE", ""),
        "lock_sha256": hashlib.sha256("\n".join(dists).encode()).hexdigest(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
    }


def file_sha256(path: str, opener=None) -> str:
    h = hashlib.sha256()
    if opener is None:
        import fsspec

        opener = lambda p, m: fsspec.open(p, m).open()  # noqa: E731
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_record(*, framework: str, params: dict, seed: int, split, labels, inputs: dict[str, str],
                weights: str, metrics: dict | None = None, device: str = "", timings: dict | None = None) -> dict:
    """The record of one training run (pure: give it the hashes)."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "framework": framework,
        "environment": environment(),
        "params": params,
        "seed": int(seed),
        "split": {"train_fraction": split.train_fraction, "seed": split.seed,
                  "train_frames": list(split.train_frames), "test_frames": list(split.test_frames)},
        "labels": {"source": labels.source, "bodyparts": labels.bodyparts, "frames": len(labels),
                   "sha256": labels.fingerprint(), "sets": labels.label_sets()},
        "inputs_sha256": inputs,
        "weights": weights,
        "device": device,
        "timings_s": timings or {},
        "metrics": metrics or {},
    }


def write(record: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=str)
