"""What a batch analysis is asked to do, checked before anything is submitted; the chunks and their join.

:func:`chunks` and :func:`join` are pure. :func:`make_plan` turns the
arguments of :func:`posehub.analyze.analyze` into a :class:`Plan` or raises
:class:`AnalyzeError` naming the file and what is wrong with it. It looks at
the file system (the model's ``model.json``, the videos, the outputs already
there) and reads each video's frame count through ``probe`` (by default
:func:`posehub.analyze.infer.probe`, which needs OpenCV), so tests in an
environment without OpenCV give their own. No Dask call is made.

Chunks start at multiples of ``batch`` (``chunk_frames`` is rounded up to
one): every batch of frames the model sees is then the same whether a video
is predicted in one pass or in chunks on several workers.
"""

from __future__ import annotations

import glob as globmod
import json
import math
import numbers
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")
DLC_SCORER = "DLC_posehub"  # DeepLabCut names its outputs <video stem><scorer>.h5; its scorers start with "DLC"


class AnalyzeError(ValueError):
    """An analysis that cannot run as asked; the message names the file and what is wrong."""


# ------------------------------------------------------------------ chunks


def chunks(frame_count: int, chunk_frames: int, align: int = 1) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering frames ``0..frame_count`` in order, each ``chunk_frames`` long
    (rounded up to a multiple of ``align``) but the last."""
    if not _is_int(frame_count) or frame_count < 0:
        raise AnalyzeError(f"frame_count must be a whole number >= 0, got {frame_count!r}")
    if not _is_int(chunk_frames) or chunk_frames < 1:
        raise AnalyzeError(f"chunk_frames must be a whole number >= 1, got {chunk_frames!r}")
    if not _is_int(align) or align < 1:
        raise AnalyzeError(f"align must be a whole number >= 1, got {align!r}")
    size = chunk_size(chunk_frames, align)
    return [(start, min(start + size, frame_count)) for start in range(0, frame_count, size)]


def chunk_size(chunk_frames: int, align: int = 1) -> int:
    """``chunk_frames`` rounded up to a multiple of ``align``."""
    return int(math.ceil(chunk_frames / align) * align)


def batches(start: int, stop: int, batch: int) -> list[tuple[int, int]]:
    """Frames ``start..stop`` in batches whose edges are multiples of ``batch`` (the first and last may be
    shorter): a frame falls in the same batch whichever chunk reads it."""
    if not _is_int(batch) or batch < 1:
        raise AnalyzeError(f"batch must be a whole number >= 1, got {batch!r}")
    out, lo = [], int(start)
    while lo < stop:
        hi = min((lo // batch + 1) * batch, int(stop))
        out.append((lo, hi))
        lo = hi
    return out


def join(parts: list[dict], frame_count: int | None = None, name: str = "the video") -> dict:
    """One video's chunk results (``{"start", "stop", "points", "scores", ...}``, in any order) as one:
    ``{"points": (frames, bodyparts, 2), "scores": (frames, bodyparts)}``. Raises :class:`AnalyzeError`
    when the chunks leave a gap, overlap, do not start at frame 0, do not end at ``frame_count`` (when
    given), or hold a number of rows other than their range's."""
    import numpy as np

    if not parts:
        raise AnalyzeError(f"{name}: no chunks to join")
    ordered = sorted(parts, key=lambda p: (int(p["start"]), int(p["stop"])))
    at = 0
    for p in ordered:
        start, stop = int(p["start"]), int(p["stop"])
        if start > at:
            raise AnalyzeError(f"{name}: frames {at}..{start - 1} are missing (a gap before the chunk {start}..{stop})")
        if start < at:
            raise AnalyzeError(f"{name}: the chunk {start}..{stop} overlaps frames already joined (up to {at})")
        rows = (len(p["points"]), len(p["scores"]))
        if rows != (stop - start,) * 2:
            raise AnalyzeError(f"{name}: the chunk {start}..{stop} holds {rows[0]} point rows and {rows[1]} score "
                               f"rows, not {stop - start}")
        at = stop
    if frame_count is not None and at != frame_count:
        raise AnalyzeError(f"{name}: the chunks end at frame {at}, the video has {frame_count} frames")
    return {"points": np.concatenate([np.asarray(p["points"], dtype=float) for p in ordered]),
            "scores": np.concatenate([np.asarray(p["scores"], dtype=float) for p in ordered])}


# ------------------------------------------------------------------ the plan


@dataclass
class VideoPlan:
    index: int
    path: str
    name: str  # the file's stem: what its outputs are named after
    frames: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)
    dest: str = ""  # the folder (or bucket prefix) its outputs go to
    files: dict[str, str] = field(default_factory=dict)  # kind -> target
    error: str = ""  # not readable: reported, never submitted


@dataclass
class Plan:
    id: str
    model_dir: str
    framework: str
    bodyparts: list[str]
    model_record: dict  # the model's run.json ({} when it has none)
    videos: list[VideoPlan]
    params: dict  # chunk_frames (asked), chunk_size (used), batch, retries, low_confidence, device, overwrite
    out: str | None = None
    out_fs: object = None

    @property
    def runnable(self) -> list[VideoPlan]:
        return [v for v in self.videos if not v.error]


def output_names(stem: str, framework: str, overlay: bool = False) -> dict[str, str]:
    """The files one video's analysis writes, by kind: PoseHub's CSV and record always; DeepLabCut's
    ``.h5``/``.csv`` for DeepLabCut models, SLEAP's ``.predictions.slp`` for SLEAP models; with
    ``overlay`` the video with the points drawn on it."""
    names = {"csv": f"{stem}.posehub.csv"}
    if framework == "dlc":
        names.update(dlc_h5=f"{stem}{DLC_SCORER}.h5", dlc_csv=f"{stem}{DLC_SCORER}.csv")
    elif framework == "sleap":
        names["slp"] = f"{stem}.predictions.slp"
    if overlay:
        names["overlay"] = f"{stem}.overlay.mp4"
    names["record"] = f"{stem}.analysis.json"
    return names


def _run_spec(folder: Path) -> dict:
    spec_file = folder / "model.json"
    try:
        spec = json.loads(spec_file.read_text())
        framework, bodyparts = str(spec["framework"]), list(spec["bodyparts"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AnalyzeError(f"{spec_file}: not a readable model.json ({type(e).__name__}: {e})") from None
    if not bodyparts:
        raise AnalyzeError(f"{spec_file}: the model has no body parts")
    return {**spec, "framework": framework, "bodyparts": bodyparts}


def ensemble_members(folder: Path) -> tuple[list[str], dict]:
    """The run folders of an ensemble's finished members (``member-<i>`` beside its ``ensemble.json``,
    wherever the ensemble was written from), and the ensemble's record."""
    try:
        record = json.loads((folder / "ensemble.json").read_text())
        members = [m for m in record["members"] if m.get("status") == "done"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AnalyzeError(f"{folder / 'ensemble.json'}: not a readable ensemble record "
                           f"({type(e).__name__}: {e})") from None
    if not members:
        raise AnalyzeError(f"the ensemble in {folder} has no finished member to predict with")
    paths = []
    for m in members:
        name = str(m.get("url") or f"member-{m.get('index')}").rstrip("/").rsplit("/", 1)[-1]
        member = folder / name
        if not (member / "model.json").is_file():
            raise AnalyzeError(f"the ensemble's member {name} is not in {folder} (no {name}/model.json): give the "
                               "folder the ensemble wrote, with its members")
        paths.append(str(member))
    return paths, record


def check_model(model) -> tuple[str, dict, dict]:
    """The model folder (absolute), its spec and its own record (``run.json``, or {}).

    A run folder (``model.json``) predicts alone. An ensemble's folder (``ensemble.json`` and its members'
    run folders) predicts with every finished member and their consensus (:mod:`posehub.ensemble.consensus`,
    from keypoints): the spec then has ``members`` (their folders) and the record is the ensemble's."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    elif getattr(model, "path", None) is not None and getattr(model, "framework", None):  # a trainers.Model
        model = os.fspath(model.path)
    elif getattr(model, "dest", None) is not None and getattr(model, "members", None) is not None:  # an EnsembleResult
        model = str(model.dest)
    if not isinstance(model, str) or not model:
        raise AnalyzeError(f"model must be the folder of a PoseHub run or ensemble (a path), got {model!r}")
    if "://" in model:
        raise AnalyzeError(f"model {model}: give the run folder as a path the workers see (e.g. under ~/buckets), "
                           "not a URL")
    folder = Path(os.path.expanduser(model)).absolute()
    if not folder.is_dir():
        raise AnalyzeError(f"model folder {folder} does not exist")
    if not (folder / "model.json").is_file() and (folder / "ensemble.json").is_file():
        members, record = ensemble_members(folder)
        specs = [_run_spec(Path(m)) for m in members]
        if len({(s["framework"], tuple(s["bodyparts"])) for s in specs}) != 1:
            raise AnalyzeError(f"the ensemble's members in {folder} differ in tool or body parts")
        record = {k: record.get(k) for k in ("id", "framework", "spec", "consensus", "members")}
        return str(folder), {**specs[0], "members": members}, {"ensemble": record}
    if not (folder / "model.json").is_file():
        raise AnalyzeError(f"{folder} is not a PoseHub run folder (no model.json) nor an ensemble's (no "
                           "ensemble.json): give the folder train_and_evaluate or train_ensemble wrote")
    spec = _run_spec(folder)
    record = {}
    if (folder / "run.json").is_file():
        try:
            record = json.loads((folder / "run.json").read_text())
        except (OSError, ValueError) as e:
            raise AnalyzeError(f"{folder / 'run.json'}: not readable ({e})") from None
    return str(folder), spec, record


GLOB_CHARS = re.compile(r"[*?\[]")


def find_videos(videos) -> list[str]:
    """Absolute paths of the videos given as a path, a folder (its videos), a glob, or a list of those; in
    the order given (each glob and folder sorted), without repeats."""
    if isinstance(videos, (str, os.PathLike)):
        videos = [videos]
    try:
        given = [os.fspath(v) for v in videos]
    except TypeError:
        raise AnalyzeError(f"videos must be a path, a glob or a list of them, got {videos!r}") from None
    if not given:
        raise AnalyzeError("no videos given")
    found: list[str] = []
    for v in given:
        if "://" in v:
            raise AnalyzeError(f"video {v}: give videos as paths the workers see (e.g. under ~/buckets), not URLs")
        path = os.path.expanduser(v)
        if GLOB_CHARS.search(path):
            matches = sorted(m for m in globmod.glob(path, recursive=True) if os.path.isfile(m))
            if not matches:
                raise AnalyzeError(f"no videos match {v}")
            found += matches
        elif os.path.isdir(path):
            inside = sorted(str(p) for p in Path(path).iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not inside:
                raise AnalyzeError(f"no videos in the folder {v} (looked for {', '.join(VIDEO_SUFFIXES)})")
            found += inside
        elif not os.path.isfile(path):
            raise AnalyzeError(f"video {v}: no such file")
        else:
            found.append(path)
    return list(dict.fromkeys(os.path.abspath(f) for f in found))


def _exists(target: str, fs) -> bool:
    if fs is None and "://" not in target:
        return os.path.exists(target)
    if fs is None:
        import fsspec

        fs = fsspec.core.url_to_fs(target)[0]
    return bool(fs.exists(target))


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name if "://" in folder else os.path.join(folder, name)


def make_plan(model, videos, *, out=None, out_fs=None, chunk_frames=500, batch=16, retries=2, low_confidence=0.5,
              overwrite=False, device="auto", name=None, probe=None, overlay=False) -> Plan:
    """Every check :func:`posehub.analyze.analyze` makes before it submits anything; a :class:`Plan` or
    :class:`AnalyzeError`. A video that cannot be read among readable ones gets its ``error`` (reported
    as failed, never submitted); when no video can be read, that is an AnalyzeError."""
    for key, value, low in (("chunk_frames", chunk_frames, 1), ("batch", batch, 1), ("retries", retries, 0)):
        if not _is_int(value) or value < low:
            raise AnalyzeError(f"{key} must be a whole number >= {low}, got {value!r}")
    if isinstance(low_confidence, bool) or not isinstance(low_confidence, numbers.Real) or not 0 <= low_confidence <= 1:
        raise AnalyzeError(f"low_confidence must be a number in [0, 1], got {low_confidence!r}")
    if not isinstance(device, str) or not device:
        raise AnalyzeError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if out is not None and (not isinstance(out, (str, os.PathLike)) or not os.fspath(out)):
        raise AnalyzeError(f"out must be a folder or bucket URL, got {out!r}")
    if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)):
        raise AnalyzeError(f"name must be letters, digits, '.', '_' and '-', got {name!r}")
    if not isinstance(overlay, bool):
        raise AnalyzeError(f"overlay must be True or False, got {overlay!r}")
    folder, spec, record = check_model(model)
    paths = find_videos(videos)
    if probe is None:
        from .infer import probe
    out_dir = None if out is None else os.fspath(out)
    if out_dir is not None and "://" not in out_dir and out_fs is None:
        out_dir = os.path.abspath(os.path.expanduser(out_dir))
    size = chunk_size(chunk_frames, batch)
    plans, targets = [], {}
    for i, path in enumerate(paths):
        stem = Path(path).stem
        vp = VideoPlan(i, path, stem, dest=out_dir if out_dir is not None else os.path.dirname(path))
        for kind, fname in output_names(stem, spec["framework"], overlay).items():
            target = _join(vp.dest, fname)
            if target in targets:
                raise AnalyzeError(f"{targets[target]} and {path} would both write {target}: analyze them "
                                   "into different folders (out=)")
            targets[target] = path
            vp.files[kind] = target
        try:
            vp.frames = int(probe(path))
        except AnalyzeError as e:
            vp.error = str(e)
        else:
            vp.chunks = chunks(vp.frames, size)
        plans.append(vp)
    if not any(not v.error for v in plans):
        raise AnalyzeError(plans[0].error if len(plans) == 1 else
                           "no video can be read: " + "; ".join(v.error for v in plans))
    if not overwrite:
        for v in plans:
            if v.error:
                continue
            there = [t for t in v.files.values() if _exists(t, out_fs)]
            if there:
                raise AnalyzeError(f"{there[0]} exists (the analysis of {v.path}): pass overwrite=True to replace "
                                   "it, or another out=")
    aid = name or new_id(spec["framework"])
    params = {"chunk_frames": int(chunk_frames), "chunk_size": size, "batch": int(batch), "retries": int(retries),
              "low_confidence": float(low_confidence), "device": device, "overwrite": bool(overwrite), "overlay": overlay}
    return Plan(aid, folder, spec["framework"], spec["bodyparts"], record, plans, params, out_dir, out_fs)


def new_id(framework: str) -> str:
    from datetime import datetime, timezone

    return f"analyze-{framework}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)
