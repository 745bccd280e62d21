"""One labels model for both tools: frames, body parts and keypoints.

``Labels`` holds what SLEAP and DeepLabCut both need for single-animal pose
estimation: the body parts, one image path per labelled frame, and the
keypoints as an array ``(frames, bodyparts, 2)`` in pixels, NaN where a body
part is not labelled. Importers read a DeepLabCut project's
``CollectedData_<scorer>.csv`` (any fsspec URL or local path) and a SLEAP
``.slp`` file (through sleap-io, in the pose image); exporters write the same
back, so each trainer gets the format its tool reads.

Bad input raises :class:`LabelsError` with a message naming the file and what
is wrong; nothing is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class LabelsError(ValueError):
    """Labels that cannot be used; the message names the file and what is wrong."""


@dataclass
class Labels:
    bodyparts: list[str]
    frames: list[str]  # image paths, relative to ``root`` (DeepLabCut's "labeled-data/<video>/imgNNNN.png")
    points: np.ndarray  # (frames, bodyparts, 2), float64 pixels, NaN = not labelled
    root: str = ""  # folder (local path or fsspec URL) the frame paths are relative to
    scorer: str = "posehub"
    source: str = ""  # the file the labels came from
    skeleton: list[tuple[str, str]] = field(default_factory=list)
    fs: object = field(default=None, repr=False, compare=False)  # fsspec filesystem of ``root`` (a bucket)

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=float)
        if self.points.shape != (len(self.frames), len(self.bodyparts), 2):
            raise LabelsError(f"{self.source or 'labels'}: keypoints have shape {self.points.shape}, expected "
                              f"({len(self.frames)} frames, {len(self.bodyparts)} body parts, 2)")
        if len(set(self.bodyparts)) != len(self.bodyparts):
            raise LabelsError(f"{self.source or 'labels'}: a body part is named twice: {self.bodyparts}")

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, indices) -> Labels:
        idx = [int(i) for i in indices]
        return Labels(self.bodyparts, [self.frames[i] for i in idx], self.points[idx], self.root, self.scorer,
                      self.source, list(self.skeleton), self.fs)

    def table(self):
        """The keypoints as a pandas DataFrame: one row per frame, columns ``<bodypart>_x``, ``<bodypart>_y``."""
        import pandas as pd

        cols = [f"{bp}_{c}" for bp in self.bodyparts for c in "xy"]
        return pd.DataFrame(self.points.reshape(len(self), -1), index=pd.Index(self.frames, name="frame"),
                            columns=cols)

    def frame_path(self, i: int) -> str:
        return join(self.root, self.frames[i])

    def read_image(self, i: int, fs=None) -> np.ndarray:
        """Frame ``i`` as an RGB uint8 array (H, W, 3)."""
        from PIL import Image

        path = self.frame_path(i)
        fs = fs if fs is not None else self.fs
        opener = fs.open if fs is not None else _open
        try:
            with opener(path, "rb") as f:
                return np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB"))
        except FileNotFoundError:
            raise LabelsError(f"{self.source or 'labels'}: frame {self.frames[i]!r} not found at {path}") from None

    def fingerprint(self) -> str:
        """sha256 of the labels themselves (body parts, frame names, keypoints), for run records."""
        h = hashlib.sha256()
        h.update("\0".join(self.bodyparts).encode())
        h.update("\0".join(self.frames).encode())
        h.update(np.ascontiguousarray(np.round(self.points, 4)).tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------ DeepLabCut's CSV

    def to_dlc_csv(self) -> str:
        """The labels as DeepLabCut's ``CollectedData_<scorer>.csv`` (one path column)."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["scorer"] + [self.scorer] * (2 * len(self.bodyparts)))
        w.writerow(["bodyparts"] + [b for b in self.bodyparts for _ in (0, 1)])
        w.writerow(["coords"] + ["x", "y"] * len(self.bodyparts))
        for name, pts in zip(self.frames, self.points):
            w.writerow([name] + ["" if np.isnan(v) else repr(float(v)) for v in pts.reshape(-1)])
        return out.getvalue()


def _open(path, mode="rb"):
    import fsspec

    return fsspec.open(path, mode).open()


def join(root: str, path: str) -> str:
    if not root:
        return path
    return posixpath.join(root.rstrip("/"), path) if "://" in root else str(Path(root) / path)


def dirname(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if "://" in path else str(Path(path).parent)


def parse_dlc_csv(text: str, source: str = "CollectedData.csv", root: str = "") -> Labels:
    """Parse DeepLabCut's single-animal ``CollectedData_<scorer>.csv``.

    Header rows ``scorer``, ``bodyparts``, ``coords`` (x, y per body part); then
    one row per frame whose first one to three columns name the image
    (``labeled-data/m4s1/img0000.png``, or the same split in three columns).
    """
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 3:
        raise LabelsError(f"{source}: not a DeepLabCut labels file (expected the header rows scorer, bodyparts, "
                          f"coords; found {len(rows)} rows)")
    heads = [r[0].strip() for r in rows[:4]]
    if "individuals" in heads:
        raise LabelsError(f"{source}: a multi-animal DeepLabCut project (it has an 'individuals' row); PoseHub's "
                          "trainers take single-animal labels")
    try:
        hb = heads.index("bodyparts")
        hc = heads.index("coords")
        hs = heads.index("scorer")
    except ValueError:
        raise LabelsError(f"{source}: not a DeepLabCut labels file: the first column of the header rows must be "
                          f"scorer, bodyparts, coords (found {heads[:3]})") from None
    coords, bps = rows[hc], rows[hb]
    first = next((i for i, c in enumerate(coords) if c.strip() in ("x", "y", "likelihood")), None)
    if first is None:
        raise LabelsError(f"{source}: the coords row has no x/y columns")
    cols = list(range(first, len(coords)))
    bodyparts: list[str] = []
    xcol: dict[str, int] = {}
    ycol: dict[str, int] = {}
    for c in cols:
        kind, bp = coords[c].strip(), bps[c].strip() if c < len(bps) else ""
        if not bp:
            raise LabelsError(f"{source}: column {c + 1} has no body part name")
        if kind == "x":
            xcol[bp] = c
            if bp not in bodyparts:
                bodyparts.append(bp)
        elif kind == "y":
            ycol[bp] = c
    missing = [b for b in bodyparts if b not in ycol] + [b for b in ycol if b not in xcol]
    if missing or not bodyparts:
        raise LabelsError(f"{source}: each body part needs an x and a y column"
                          + (f" (incomplete: {', '.join(missing)})" if missing else " (none found)"))
    scorer = rows[hs][first].strip() if len(rows[hs]) > first else "posehub"
    frames, pts = [], []
    for n, r in enumerate(rows[3:], start=4):
        name = "/".join(p.strip() for p in r[:first] if p.strip())
        if not name:
            raise LabelsError(f"{source}: line {n} has no image path")
        vals = []
        for bp in bodyparts:
            for c in (xcol[bp], ycol[bp]):
                cell = r[c].strip() if c < len(r) else ""
                try:
                    vals.append(float(cell) if cell else np.nan)
                except ValueError:
                    raise LabelsError(f"{source}: line {n}, {bp} {coords[c]}: {cell!r} is not a number") from None
        frames.append(name)
        pts.append(vals)
    if not frames:
        raise LabelsError(f"{source}: no labelled frames")
    if len(set(frames)) != len(frames):
        dup = sorted({f for f in frames if frames.count(f) > 1})[0]
        raise LabelsError(f"{source}: frame {dup!r} is labelled twice")
    points = np.array(pts, dtype=float).reshape(len(frames), len(bodyparts), 2)
    if np.isnan(points).all():
        raise LabelsError(f"{source}: no keypoint is labelled")
    return Labels(bodyparts, frames, points, root=root, scorer=scorer, source=source)


def project_root(csv_path: str) -> str:
    """The DeepLabCut project folder of ``<project>/labeled-data/<video>/CollectedData_x.csv``."""
    d = dirname(csv_path)
    parent = dirname(d)
    if posixpath.basename(parent.rstrip("/")) == "labeled-data":
        return dirname(parent)
    return d


def load_dlc(path: str, fs=None) -> Labels:
    """Read a DeepLabCut project's labels: the CSV itself, or a project folder (its
    ``labeled-data/*/CollectedData_*.csv``, all videos together)."""
    opener = fs.open if fs is not None else _open
    files = [path]
    if not str(path).endswith(".csv"):
        files = _find_csvs(path, fs)
        if not files:
            raise LabelsError(f"{path}: no labeled-data/*/CollectedData_*.csv in this DeepLabCut project")
    parts = []
    for f in files:
        try:
            with opener(f, "rb") as fh:
                text = fh.read().decode("utf-8-sig")
        except FileNotFoundError:
            raise LabelsError(f"{f}: no such labels file") from None
        except UnicodeDecodeError:
            raise LabelsError(f"{f}: not a text (CSV) file") from None
        parts.append(parse_dlc_csv(text, source=str(f), root=project_root(str(f))))
    out = concat(parts) if len(parts) > 1 else parts[0]
    out.fs = fs
    return out


def _find_csvs(folder: str, fs=None) -> list[str]:
    if fs is None:
        import fsspec

        fs, folder = fsspec.core.url_to_fs(folder)
        proto = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        found = sorted(fs.glob(posixpath.join(folder, "labeled-data", "*", "CollectedData_*.csv")))
        return [f if proto == "file" else f"{proto}://{f}" for f in found]
    return sorted(fs.glob(posixpath.join(folder, "labeled-data", "*", "CollectedData_*.csv")))


def concat(parts: list[Labels]) -> Labels:
    bps = parts[0].bodyparts
    for p in parts[1:]:
        if p.bodyparts != bps:
            raise LabelsError(f"{p.source}: body parts {p.bodyparts} differ from {parts[0].source}'s {bps}")
    roots = {p.root for p in parts}
    if len(roots) != 1:
        raise LabelsError("labels from different project folders cannot be combined: " + ", ".join(sorted(roots)))
    return Labels(bps, [f for p in parts for f in p.frames], np.concatenate([p.points for p in parts]),
                  parts[0].root, parts[0].scorer, parts[0].source, fs=parts[0].fs)


def load(path: str, fs=None) -> Labels:
    """Labels from a DeepLabCut CSV or project folder, or a SLEAP ``.slp`` file."""
    if str(path).endswith(".slp"):
        from .slp import load_slp

        return load_slp(path)
    return load_dlc(path, fs=fs)
