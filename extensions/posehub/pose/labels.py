"""One labels model for both tools: frames, body parts and keypoints.

``Labels`` holds what SLEAP and DeepLabCut both need for single-animal pose
estimation: the body parts, one image path per labelled frame, and the
keypoints as an array ``(frames, bodyparts, 2)`` in pixels, NaN where a body
part is not labelled. Importers read a DeepLabCut project's
``CollectedData_<scorer>.csv`` or ``.h5`` (any fsspec URL or local path) and a
SLEAP ``.slp`` file (through sleap-io, in the pose image); exporters write the
same back, so each trainer gets the format its tool reads. :func:`merge` puts
label sets together (the labels a model was trained on, and the frames
labelled next), and remembers which sets they were for the run record.

Bad input raises :class:`LabelsError` with a message naming the file and what
is wrong; nothing is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
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
    sets: list[tuple[str, str]] = field(default_factory=list)  # merged labels: each set's (source, root)
    origin: list[int] = field(default_factory=list)  # merged labels: each frame's set (an index into ``sets``)

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=float)
        if self.points.shape != (len(self.frames), len(self.bodyparts), 2):
            raise LabelsError(f"{self.source or 'labels'}: keypoints have shape {self.points.shape}, expected "
                              f"({len(self.frames)} frames, {len(self.bodyparts)} body parts, 2)")
        if len(set(self.bodyparts)) != len(self.bodyparts):
            raise LabelsError(f"{self.source or 'labels'}: a body part is named twice: {self.bodyparts}")
        if self.sets and len(self.origin) != len(self.frames):
            raise LabelsError(f"{self.source or 'labels'}: {len(self.origin)} set indices for "
                              f"{len(self.frames)} frames")

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, indices) -> Labels:
        idx = [int(i) for i in indices]
        return Labels(self.bodyparts, [self.frames[i] for i in idx], self.points[idx], self.root, self.scorer,
                      self.source, list(self.skeleton), self.fs, list(self.sets),
                      [self.origin[i] for i in idx] if self.sets else [])

    def label_sets(self) -> list[dict]:
        """The label sets these labels are made of, for the run record: each set's ``source``, how many of its
        ``frames`` are here and their ``sha256`` (:meth:`fingerprint` of those frames, named as in the set: the
        whole set gives the set's own fingerprint). One entry for labels that were not merged."""
        if not self.sets:
            return [{"source": self.source, "frames": len(self), "sha256": self.fingerprint()}]
        out = []
        for k, (source, root) in enumerate(self.sets):
            idx = [i for i, o in enumerate(self.origin) if o == k]
            if idx:
                names = [_relative(root, self.frames[i]) for i in idx]
                out.append({"source": source, "frames": len(idx),
                            "sha256": _fingerprint(self.bodyparts, names, self.points[idx])})
        return out

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
        return _fingerprint(self.bodyparts, self.frames, self.points)

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


def _fingerprint(bodyparts, frames, points) -> str:
    h = hashlib.sha256()
    h.update("\0".join(bodyparts).encode())
    h.update("\0".join(frames).encode())
    h.update(np.ascontiguousarray(np.round(points, 4)).tobytes())
    return h.hexdigest()


def _open(path, mode="rb"):
    import fsspec

    return fsspec.open(path, mode).open()


def join(root: str, path: str) -> str:
    if not root:
        return path
    return posixpath.join(root.rstrip("/"), path) if "://" in root else str(Path(root) / path)


def dirname(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if "://" in path else str(Path(path).parent)


def _relative(root: str, path: str) -> str:
    """``path`` relative to ``root`` again (the inverse of :func:`join`)."""
    if not root:
        return path
    base = root.rstrip("/") + "/" if "://" in root else str(Path(root)) + os.sep
    return path[len(base):] if path.startswith(base) else path


def parse_dlc_csv(text: str, source: str = "CollectedData.csv", root: str = "") -> Labels:
    """Parse DeepLabCut's single-animal ``CollectedData_<scorer>.csv``.

    Header rows ``scorer``, ``bodyparts``, ``coords`` (x, y per body part; other
    coords such as machine labels' ``likelihood`` are ignored); then one row per
    frame whose first one to three columns name the image
    (``labeled-data/m4s1/img0000.png``, or the same split in three columns). A
    row with no keypoint at all is a frame nobody labelled and is left out, as
    DeepLabCut's ``dropunlabeledframes`` does (napari-deeplabcut writes such a row
    for every image of the folder).
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
    labelled = ~np.isnan(points).all(axis=(1, 2))
    if not labelled.any():
        raise LabelsError(f"{source}: no keypoint is labelled")
    return Labels(bodyparts, [f for f, keep in zip(frames, labelled) if keep], points[labelled], root=root,
                  scorer=scorer, source=source)


def dlc_frame_csv(df, source: str = "CollectedData.h5") -> str:
    """A DeepLabCut labels DataFrame (what its ``.h5`` files hold: columns scorer / [individuals /] bodyparts /
    coords, rows the image paths, whole or in three levels) as the text of its ``.csv``."""
    import pandas as pd

    columns = getattr(df, "columns", None)
    if not isinstance(df, pd.DataFrame) or not isinstance(columns, pd.MultiIndex) or columns.nlevels not in (3, 4):
        raise LabelsError(f"{source}: not DeepLabCut labels (expected columns scorer, bodyparts, coords)")
    df = df.copy()
    df.columns = df.columns.set_names(["scorer", "bodyparts", "coords"] if df.columns.nlevels == 3
                                      else ["scorer", "individuals", "bodyparts", "coords"])
    df.index = df.index.set_names([None] * df.index.nlevels)
    return df.to_csv()


def parse_dlc_h5(path: str, source: str = "", root: str = "", fs=None) -> Labels:
    """Parse DeepLabCut's ``CollectedData_<scorer>.h5`` (or ``machinelabels-iter<N>.h5``) like its CSV; needs
    pandas and PyTables (in the pose image)."""
    source = source or str(path)
    try:
        import pandas as pd
        import tables  # noqa: F401 - pandas reads .h5 through PyTables
    except ImportError:
        raise LabelsError(f"{source}: reading DeepLabCut's .h5 labels needs pandas and PyTables (in the pose image); "
                          "the .csv DeepLabCut writes beside it is read anywhere") from None
    tmp = None
    local = str(path)
    if fs is not None or "://" in local:
        import tempfile

        opener = fs.open if fs is not None else _open
        with tempfile.NamedTemporaryFile(suffix=".h5", delete=False) as out, opener(local, "rb") as f:
            out.write(f.read())
        tmp = local = out.name
    try:
        try:
            df = pd.read_hdf(local, "df_with_missing")  # DeepLabCut's and napari-deeplabcut's key
        except KeyError:
            df = pd.read_hdf(local)
    except FileNotFoundError:
        raise LabelsError(f"{source}: no such labels file") from None
    except (KeyError, ValueError, TypeError, OSError, tables.HDF5ExtError) as e:
        raise LabelsError(f"{source}: not a readable DeepLabCut .h5 file ({e})") from None
    finally:
        if tmp:
            os.unlink(tmp)
    return parse_dlc_csv(dlc_frame_csv(df, source), source=source, root=root)


def project_root(csv_path: str) -> str:
    """The DeepLabCut project folder of ``<project>/labeled-data/<video>/CollectedData_x.csv``."""
    d = dirname(csv_path)
    parent = dirname(d)
    if posixpath.basename(parent.rstrip("/")) == "labeled-data":
        return dirname(parent)
    return d


def load_dlc(path: str, fs=None) -> Labels:
    """Read a DeepLabCut project's labels: a ``CollectedData_<scorer>.csv`` or ``.h5`` itself, or a project
    folder (its ``labeled-data/*/CollectedData_*``, all videos together).

    In a folder that holds both files of one scorer, the newer one is read; when they were written within
    :data:`SAME_SAVE_S` of each other they are one save (DeepLabCut's tools and napari-deeplabcut write both,
    the ``.h5`` first) and the CSV is read, which needs no PyTables. An ``.h5`` saved alone afterwards (or one
    with no CSV beside it) is read instead."""
    opener = fs.open if fs is not None else _open
    files = [path]
    if not str(path).endswith((".csv", ".h5")):
        files = _find_label_files(path, fs)
        if not files:
            raise LabelsError(f"{path}: no labeled-data/*/CollectedData_*.csv (or .h5) in this DeepLabCut project")
    parts = []
    for f in files:
        if str(f).endswith(".h5"):
            parts.append(parse_dlc_h5(f, str(f), project_root(str(f)), fs))
            continue
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


SAME_SAVE_S = 2.0  # a CSV and an .h5 of one scorer written this close together are one save


def _find_label_files(folder: str, fs=None) -> list[str]:
    """One labels file per ``labeled-data/<video>/CollectedData_<scorer>``: the CSV or the .h5 (see
    :func:`load_dlc`)."""
    url = None
    if fs is None:
        import fsspec

        fs, folder = fsspec.core.url_to_fs(folder)
        proto = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        url = None if proto == "file" else proto
    found = sorted(fs.glob(posixpath.join(folder, "labeled-data", "*", "CollectedData_*.csv"))
                   + fs.glob(posixpath.join(folder, "labeled-data", "*", "CollectedData_*.h5")))
    by_stem: dict[str, dict[str, str]] = {}
    for f in found:
        stem, ext = posixpath.splitext(f)
        by_stem.setdefault(stem, {})[ext] = f
    chosen = []
    for stem in sorted(by_stem):
        both = by_stem[stem]
        pick = both.get(".csv", both.get(".h5"))
        if len(both) == 2 and _newer_by(fs, both[".h5"], both[".csv"]) > SAME_SAVE_S:
            pick = both[".h5"]
        chosen.append(pick)
    return [f"{url}://{f}" if url else f for f in chosen]


def _newer_by(fs, a: str, b: str) -> float:
    """Seconds ``a`` was modified after ``b`` (0 where the filesystem does not say)."""
    try:
        return (fs.modified(a) - fs.modified(b)).total_seconds()
    except (NotImplementedError, OSError, AttributeError, TypeError, KeyError, ValueError):
        return 0.0


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


def merge(*sets: Labels) -> Labels:
    """Label sets together, to train on all of them (the labels an ensemble was trained on and the frames
    labelled next, say). Every set must have the same body parts (their order is the first set's); a frame
    (the same image file) may be in only one set. Frames keep their full paths (``root`` is ""), so sets from
    different folders, buckets and tools go together; each set's source and frames are kept
    (:meth:`Labels.label_sets`, written to the run record). Merged sets can be merged again."""
    if len(sets) == 1 and isinstance(sets[0], (list, tuple)):
        sets = tuple(sets[0])
    if not sets:
        raise LabelsError("merge: no labels given")
    bad = [type(s).__name__ for s in sets if not isinstance(s, Labels)]
    if bad:
        raise LabelsError(f"merge takes posehub Labels (load them with posehub.pose.load_labels), got {bad[0]}")
    first = sets[0]
    frames, points, where, origin, routes = [], [], {}, [], []
    parts: list[tuple[str, str]] = []
    for lab in sets:
        name = lab.source or "labels"
        if sorted(lab.bodyparts) != sorted(first.bodyparts):
            raise LabelsError(f"cannot merge {name} (body parts {', '.join(lab.bodyparts)}) with "
                              f"{first.source or 'labels'} (body parts {', '.join(first.bodyparts)}): every set "
                              "needs the same body parts")
        offset = len(parts)
        parts += lab.sets or [(lab.source, lab.root)]
        own = lab.origin or [0] * len(lab)
        for i in range(len(lab)):
            path = lab.frame_path(i)
            if lab.fs is None and "://" not in path:
                path = os.path.abspath(path)
            if path in where:
                raise LabelsError(f"frame {path} is in {where[path]} and in {name}: each frame may be merged once")
            where[path] = name
            frames.append(path)
            origin.append(offset + own[i])
        points.append(lab.points[:, [lab.bodyparts.index(b) for b in first.bodyparts]])
        routes += lab.fs.routes if isinstance(lab.fs, Filesystems) else [(lab.root, lab.fs)]
    fss = {id(fs): fs for _, fs in routes}
    fs = next(iter(fss.values())) if len(fss) == 1 else Filesystems(routes)
    skeleton = next((list(lab.skeleton) for lab in sets if lab.skeleton), [])
    return Labels(list(first.bodyparts), frames, np.concatenate(points), "", first.scorer,
                  " + ".join(source or "labels" for source, _ in parts), skeleton, fs, parts, origin)


class Filesystems:
    """Where merged sets live on different filesystems (a bucket and the local disk): opens each frame through
    the filesystem of the set whose folder holds it, and a path no set's folder holds as a local file or URL."""

    def __init__(self, routes: list[tuple[str, object]]):
        for root, fs in routes:
            if fs is not None and not root:
                raise LabelsError("labels read through a filesystem but with no root folder cannot be merged with "
                                  "labels from elsewhere: give their root")
        self.routes = sorted(((root, fs) for root, fs in routes if fs is not None), key=lambda r: -len(r[0]))
        self.routes += [(root, fs) for root, fs in routes if fs is None]

    def open(self, path, mode="rb"):
        for root, fs in self.routes:
            if fs is not None and (path == root or path.startswith(root.rstrip("/") + "/")):
                return fs.open(path, mode)
        return _open(path, mode)


def load(path: str, fs=None) -> Labels:
    """Labels from a DeepLabCut CSV, .h5 or project folder, or a SLEAP ``.slp`` file."""
    if str(path).endswith(".slp"):
        from .slp import load_slp

        return load_slp(path)
    return load_dlc(path, fs=fs)
