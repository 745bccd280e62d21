"""Frames to label next, as a project for the labelling tool: a SLEAP ``.slp`` or a DeepLabCut project folder.

An ensemble ranks the frames of its video by how much its members disagree (``label_next.csv``) and
keeps their consensus (``consensus.csv``). :func:`sleap_project` and :func:`dlc_project` turn the top
frames into a project the labelling tool opens as it is, the consensus already placed as predictions to
correct; :func:`label_next_project` picks the tool that trained the ensemble and a place for the project.
Once labelled, :func:`posehub.pose.load_labels` reads the project (only the frames a person labelled) and
:func:`posehub.pose.merge_labels` puts them with the labels the ensemble was trained on.

SLEAP (``sleap-label``): ``<name>.slp`` holds the skeleton, the frames as suggestions and the consensus
as predicted instances, the frames' images embedded, so the file opens wherever it is copied. Its video
is ``<name>.video.h5`` beside it: the frames as an HDF5 video whose frame numbers are the video's. sleap-label
saves labels pointing at the video an embedded file was made from, not at the embedded images, and that
file keeps the labelled frames' images after such a save (sleap-io finds it beside the ``.slp`` wherever
the two are moved).

DeepLabCut (napari with napari-deeplabcut): a project folder with ``config.yaml``,
``labeled-data/<video>/img<frame>.png`` (named as DeepLabCut names the frames it extracts) and
``machinelabels-iter0.h5``, the consensus as machine labels with their likelihoods. Open
``labeled-data/<video>`` in napari; saving refined machine labels writes ``CollectedData_<scorer>.h5`` and
``.csv`` there with every point of the layer, so delete the points of frames you did not check.

Reading the results and choosing the frames is pure (:func:`from_result`, :func:`from_files`); the writers
check everything first, read the video, write under a temporary name and rename at the end: on an error
nothing is left behind. Writing needs the pose image (sleap-io; pandas with PyTables).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import posixpath
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from .labels import Labels, LabelsError, join

NO_VIDEO = "this ensemble sampled no video frames: give video= when training it to get frames to label next"
MACHINE_SCORER = "posehub_consensus"  # the scorer of the machine labels: the ensemble's consensus
TOOLS = {"sleap": "sleap", "sleap-nn": "sleap", "dlc": "dlc", "deeplabcut": "dlc"}


@dataclass
class NextFrames:
    """The frames of an ensemble's video to label next, the most disagreement first, with the consensus."""

    ensemble: str
    framework: str
    dest: str  # the ensemble's folder
    video: str  # local path or bucket URL
    bodyparts: list[str]
    skeleton: list[tuple[str, str]]
    scorer: str  # of the labels the ensemble was trained on, where their file names one (CollectedData_<scorer>)
    frames: list[int]  # frame numbers in the video
    disagreement: list[float]  # the members' disagreement, px (label_next.csv's score_px)
    points: np.ndarray  # (frames, bodyparts, 2) consensus, NaN where no member found the body part
    scores: np.ndarray  # (frames, bodyparts) consensus confidence


# ---------------------------------------------------------------- reading results (pure)


def check_top(top) -> int:
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise LabelsError(f"top must be a whole number >= 1 (how many frames to label), got {top!r}")
    return int(top)


def _scorer(source: str) -> str:
    m = re.match(r"CollectedData_(.+)\.(csv|h5)$", posixpath.basename(str(source)))
    return m.group(1) if m else ""


def _choose(where, ensemble, framework, dest, spec, bodyparts, ranked, consensus, top) -> NextFrames:
    """``ranked``: label_next rows (source, frame, score_px); ``consensus``: video frame -> (points, scores)."""
    video = spec.get("video") or ""
    rows = [r for r in ranked if r["source"] == "video"]
    if not video or not rows:
        raise LabelsError(f"{where}: {NO_VIDEO}")
    rows = rows[:top]
    missing = [r["frame"] for r in rows if r["frame"] not in consensus]
    if missing:
        raise LabelsError(f"{where}: video frame {missing[0]} is ranked but has no consensus")
    labels = spec.get("labels") or {}
    b = len(bodyparts)
    return NextFrames(
        ensemble, framework, dest, str(video), list(bodyparts),
        [tuple(e) for e in labels.get("skeleton") or []], _scorer(labels.get("source", "")),
        [int(r["frame"]) for r in rows], [float(r["score_px"]) for r in rows],
        np.array([consensus[r["frame"]][0] for r in rows], dtype=float).reshape(len(rows), b, 2),
        np.array([consensus[r["frame"]][1] for r in rows], dtype=float).reshape(len(rows), b))


def from_result(result, top: int = 20) -> NextFrames:
    """The top ``top`` video frames of an :class:`~posehub.ensemble.results.EnsembleResult`."""
    top = check_top(top)
    where = result.dest or result.id
    if result.video is None or not result.video_frames:
        if result.test is None:
            raise LabelsError(f"{where}: no member of ensemble {result.id} finished: there is no consensus and "
                              "nothing to label next")
        raise LabelsError(f"{where}: {NO_VIDEO}")
    consensus = {int(f): (result.video.points[i], result.video.scores[i]) for i, f in enumerate(result.video_frames)}
    return _choose(where, result.id, result.framework, result.dest, result.spec, result.bodyparts,
                   result.label_next, consensus, top)


def from_files(doc: dict, consensus_csv: str, label_next_csv: str, where: str = "", top: int = 20) -> NextFrames:
    """The top ``top`` video frames from an ensemble's ``ensemble.json`` (parsed), ``consensus.csv`` and
    ``label_next.csv`` (their text)."""
    top = check_top(top)
    spec = doc.get("spec") or {}
    bodyparts = list((spec.get("labels") or {}).get("bodyparts") or [])
    if not bodyparts:
        raise LabelsError(f"{where}: ensemble.json names no body parts")
    consensus = {}
    try:
        for row in csv.DictReader(io.StringIO(consensus_csv)):
            if row["source"] != "video":
                continue
            pts = [[_number(row[f"{bp}_x"]), _number(row[f"{bp}_y"])] for bp in bodyparts]
            consensus[int(row["frame"])] = (pts, [_number(row[f"{bp}_score"], 0.0) for bp in bodyparts])
        ranked = [{"source": r["source"], "frame": int(r["frame"]), "score_px": _number(r["score_px"])}
                  for r in csv.DictReader(io.StringIO(label_next_csv))]
    except (KeyError, ValueError, csv.Error) as e:
        raise LabelsError(f"{where}: consensus.csv or label_next.csv is not an ensemble's ({e})") from None
    return _choose(where, doc.get("id", ""), doc.get("framework", ""), doc.get("dest", where), spec, bodyparts,
                   ranked, consensus, top)


def _number(cell: str, empty: float = math.nan) -> float:
    return float(cell) if cell.strip() else empty


def read(results, top: int = 20, fs=None) -> NextFrames:
    """:class:`NextFrames` of an ensemble: its folder (a local path, or a bucket URL read through ``fs``), its
    :class:`~posehub.ensemble.results.EnsembleResult`, or :class:`NextFrames` already read."""
    top = check_top(top)
    if isinstance(results, NextFrames):
        return results if len(results.frames) <= top else _top(results, top)
    if hasattr(results, "label_next") and hasattr(results, "video_frames"):
        return from_result(results, top)
    if not isinstance(results, (str, Path)):
        raise LabelsError(f"results must be an ensemble's folder or its EnsembleResult, got {type(results).__name__}")
    folder = str(results)
    texts = {}
    for name in ("ensemble.json", "consensus.csv", "label_next.csv"):
        texts[name] = _read_text(folder, name, fs)
    if texts["ensemble.json"] is None:
        raise LabelsError(f"{folder}: not an ensemble's results (no ensemble.json): give the folder an ensemble "
                          "wrote its results to (its dest)")
    try:
        doc = json.loads(texts["ensemble.json"])
    except ValueError as e:
        raise LabelsError(f"{folder}: ensemble.json is not readable JSON ({e})") from None
    if texts["consensus.csv"] is None or texts["label_next.csv"] is None:
        raise LabelsError(f"{folder}: no member of ensemble {doc.get('id', '')} finished: there is no consensus and "
                          "nothing to label next")
    return from_files(doc, texts["consensus.csv"], texts["label_next.csv"], folder, top)


def _top(nf: NextFrames, top: int) -> NextFrames:
    return NextFrames(nf.ensemble, nf.framework, nf.dest, nf.video, nf.bodyparts, nf.skeleton, nf.scorer,
                      nf.frames[:top], nf.disagreement[:top], nf.points[:top], nf.scores[:top])


def _read_text(folder: str, name: str, fs=None) -> str | None:
    try:
        if fs is None and "://" not in folder:
            return (Path(folder).expanduser() / name).read_text()
        if fs is None:
            import fsspec

            fs = fsspec.core.url_to_fs(folder)[0]
        return fs.cat_file(join(folder, name)).decode()
    except (FileNotFoundError, NotADirectoryError):
        return None


# ---------------------------------------------------------------- where things go


def tool_of(name: str) -> str:
    tool = TOOLS.get(str(name).lower())
    if tool is None:
        raise LabelsError(f"tool must be one of sleap, dlc (DeepLabCut), got {name!r}")
    return tool


def default_out(nf: NextFrames, tool: str) -> Path:
    """``<dest>/label-next/`` for an ensemble in a local folder, ``~/label-next/<ensemble id>/`` for one in a
    bucket (a labelling tool opens local files); the ``.slp`` in it for SLEAP, the folder itself (the
    DeepLabCut project) for DeepLabCut."""
    if nf.dest and "://" not in nf.dest:
        base = Path(nf.dest).expanduser() / "label-next"
    else:
        base = Path.home() / "label-next" / (nf.ensemble or "ensemble")
    return base / "label_next.slp" if tool_of(tool) == "sleap" else base


def label_next_project(results, tool: str | None = None, out=None, top: int = 20, fs=None, *, video_fs=None,
                       overwrite: bool = False) -> Path:
    """The frames to label next as a project for ``tool`` (default: the framework that trained the ensemble),
    written to ``out`` (default :func:`default_out`); where it was written."""
    nf = read(results, top, fs)
    tool = tool_of(tool or nf.framework)
    out = Path(out) if out is not None else default_out(nf, tool)
    writer = sleap_project if tool == "sleap" else dlc_project
    return writer(nf, out, top, video_fs=video_fs, overwrite=overwrite)


def _check_free(paths: list[Path], overwrite: bool) -> None:
    taken = [p for p in paths if p.exists() or p.is_symlink()]
    if taken and not overwrite:
        raise LabelsError(f"{taken[0]} already exists: pass overwrite=True to replace it (and any labels saved in "
                          "it), or write the project elsewhere")


@contextlib.contextmanager
def _staging(final: Path):
    """A temporary folder beside ``final`` (its parent made as needed); on an error, the folder and the parents
    made for it are removed."""
    made = []
    parent = final.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent

    def undo():
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()

    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as e:
        undo()
        raise LabelsError(f"{final.parent}: cannot write the project here ({e})") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        undo()
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def _video_fs(video: str, fs=None):
    if fs is None and "://" in video:
        import fsspec

        fs = fsspec.core.url_to_fs(video)[0]
    return fs


def check_video(video: str, fs=None) -> None:
    """LabelsError unless the ensemble's video (a local path, or a bucket URL read through ``fs``) is there."""
    fs = _video_fs(video, fs)
    try:
        there = fs.exists(video) if fs is not None else Path(video).is_file()
    except (OSError, ValueError) as e:
        raise LabelsError(f"{video}: the ensemble's video cannot be reached ({e})") from None
    if not there:
        raise LabelsError(f"{video}: the ensemble's video is missing (moved or deleted?): put it back, or train an "
                          "ensemble on where it is now")


def _needs(modules: tuple[str, ...], what: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise LabelsError(f"{what} needs {', '.join(missing)} (in the pose image)")


@contextlib.contextmanager
def _local_video(video: str, fs=None):
    """The video as a local file (a bucket's is copied to a temporary one)."""
    check_video(video, fs)
    fs = _video_fs(video, fs)
    if fs is None:
        yield video
        return
    tmp = tempfile.mkdtemp(prefix="posehub-video-")
    try:
        local = os.path.join(tmp, "video" + posixpath.splitext(video)[1])
        fs.get_file(video, local)
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _frames(nf: NextFrames, video_fs=None) -> tuple[list[np.ndarray], int]:
    """The frames' images (RGB) and the video's frame count."""
    from . import show

    with _local_video(nf.video, video_fs) as local:
        try:
            return show.video_frames(local, nf.frames), show.frame_count(local)
        except ValueError as e:
            raise LabelsError(f"{nf.video}: {e}") from None


# ---------------------------------------------------------------- SLEAP


def sleap_project(results, out_path, top: int = 20, fs=None, *, video_fs=None, overwrite: bool = False) -> Path:
    """A SLEAP project of the top ``top`` frames to label next: ``out_path`` (``.slp``) and, beside it,
    ``<name>.video.h5`` (see the module's notes). ``results``: the ensemble's folder (read through ``fs``), its
    EnsembleResult or :class:`NextFrames`; ``video_fs``: the filesystem of its video when that is in a bucket.
    An existing project (or the ``<name>.frames`` folder ``load_labels`` makes) is replaced only with
    ``overwrite``."""
    top = check_top(top)
    out = Path(out_path).expanduser().absolute()
    if out.suffix != ".slp":
        raise LabelsError(f"{out}: a SLEAP project is a .slp file")
    video_file = out.with_name(out.stem + ".video.h5")
    frames_dir = out.with_name(out.stem + ".frames")  # posehub.pose.slp's copies of the labelled frames
    _check_free([out, video_file, frames_dir], overwrite)
    nf = read(results, top, fs)
    check_video(nf.video, video_fs)
    _needs(("sleap_io", "h5py", "cv2"), "writing a SLEAP project")
    images, _ = _frames(nf, video_fs)
    with _staging(out) as tmp:
        write_slp(nf, images, tmp / out.name, tmp / video_file.name)
        _repoint(tmp / out.name, str(tmp), str(out.parent))
        os.replace(tmp / video_file.name, video_file)
        os.replace(tmp / out.name, out)
        shutil.rmtree(frames_dir, ignore_errors=True)
    return out


def write_slp(nf: NextFrames, images: list[np.ndarray], slp_path: Path, video_path: Path) -> None:
    """The ``.slp`` and its HDF5 video of ``images`` (the frames of ``nf``, in order)."""
    import h5py
    import sleap_io as sio
    from sleap_io.io.video_reading import HDF5Video

    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    with h5py.File(video_path, "w") as f:
        f.create_dataset("video", data=arr, chunks=(1, *arr.shape[1:]), compression="gzip")
        f.create_dataset("frame_numbers", data=np.asarray(nf.frames, dtype=int))  # sleap-io's frame map
    backend = HDF5Video(str(video_path), dataset="video", input_format="channels_last", grayscale=False)
    video = sio.Video(filename=str(video_path), backend=backend)
    skeleton = sio.Skeleton(list(nf.bodyparts), edges=[list(e) for e in nf.skeleton])
    frames, suggestions = [], []
    for k, frame in enumerate(nf.frames):
        seen = nf.scores[k][np.isfinite(nf.points[k]).all(axis=-1)]
        inst = sio.PredictedInstance.from_numpy(nf.points[k], skeleton=skeleton, point_scores=nf.scores[k],
                                                score=float(seen.mean()) if seen.size else 0.0)
        frames.append(sio.LabeledFrame(video=video, frame_idx=int(frame), instances=[inst]))
        suggestions.append(sio.SuggestionFrame(video=video, frame_idx=int(frame)))
    labels = sio.Labels(labeled_frames=frames, videos=[video], skeletons=[skeleton], suggestions=suggestions,
                        provenance={"posehub_label_next": {"ensemble": nf.ensemble, "video": nf.video,
                                                           "frames": list(nf.frames),
                                                           "disagreement_px": list(nf.disagreement)}})
    try:
        sio.save_slp(labels, str(slp_path), embed="suggestions", verbose=False)
    finally:
        backend.close()


def _repoint(slp_path: Path, old: str, new: str) -> None:
    """Paths under ``old`` in the .slp's video records, as under ``new`` (the file was made in a temporary
    folder)."""
    import h5py

    if old == new:
        return

    def fix(x):
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, list):
            return [fix(v) for v in x]
        if isinstance(x, str) and (x == old or x.startswith(old + os.sep)):
            return new + x[len(old):]
        return x

    def again(raw):
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        out = json.dumps(fix(json.loads(text)), separators=(",", ":"))
        return out.encode() if isinstance(raw, bytes) else out

    with h5py.File(slp_path, "r+") as f:
        ds = f["videos_json"]
        for i in range(len(ds)):
            ds[i] = again(ds[i])
        for name in f:
            group = f[name].get("source_video") if isinstance(f[name], h5py.Group) else None
            if group is None:
                continue
            if "json" in group.attrs:
                group.attrs["json"] = again(group.attrs["json"])
            if "json" in group:
                raw = again(group["json"][()])
                del group["json"]
                group.create_dataset("json", data=raw)


# ---------------------------------------------------------------- DeepLabCut


def dlc_frame_names(frames: list[int], frame_count: int) -> list[str]:
    """``img<frame>.png``, zero-padded to the width DeepLabCut uses for the video (its frame count's digits)."""
    width = max(int(math.ceil(math.log10(frame_count))) if frame_count > 1 else 1,
                len(str(max(frames, default=0))))
    return [f"img{f:0{width}d}.png" for f in frames]


def machine_labels(nf: NextFrames, video_name: str, names: list[str]):
    """The consensus as DeepLabCut's machine labels (``machinelabels-iter0.h5``): rows ("labeled-data",
    video, image), columns scorer / bodyparts / coords (x, y, likelihood)."""
    import pandas as pd

    cols = pd.MultiIndex.from_product([[MACHINE_SCORER], nf.bodyparts, ["x", "y", "likelihood"]],
                                      names=["scorer", "bodyparts", "coords"])
    rows = pd.MultiIndex.from_tuples([("labeled-data", video_name, n) for n in names])
    data = np.concatenate([nf.points, nf.scores[..., None]], axis=-1).reshape(len(names), -1)
    return pd.DataFrame(data, index=rows, columns=cols)


def dlc_config(nf: NextFrames, project: Path, scorer: str, width: int, height: int,
               today: datetime | None = None) -> dict:
    """DeepLabCut's ``config.yaml`` for the project (a single-animal project, as DeepLabCut's create_new_project
    writes it)."""
    from .trainers.dlc import project_config

    labels = Labels(list(nf.bodyparts), [], np.zeros((0, len(nf.bodyparts), 2)), scorer=scorer,
                    skeleton=list(nf.skeleton))
    cfg = project_config(project, labels, width, height, 0.95)
    today = today or datetime.now()
    cfg.update({"Task": "label-next", "date": f"{today:%b}{today.day}",
                "video_sets": {nf.video: {"crop": f"0, {width}, 0, {height}"}}, "numframes2pick": len(nf.frames)})
    return cfg


def dlc_project(results, out_dir, top: int = 20, fs=None, *, video_fs=None, scorer: str | None = None,
                overwrite: bool = False) -> Path:
    """A DeepLabCut project of the top ``top`` frames to label next, in the folder ``out_dir`` (see the module's
    notes). ``scorer``: whose labels napari-deeplabcut saves (``CollectedData_<scorer>``; default the scorer of
    the labels the ensemble was trained on, else "posehub"). An existing folder is replaced only with
    ``overwrite``."""
    top = check_top(top)
    out = Path(out_dir).expanduser().absolute()
    _check_free([out], overwrite)
    nf = read(results, top, fs)
    scorer = scorer or nf.scorer or "posehub"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", scorer):
        raise LabelsError(f"scorer {scorer!r}: use letters, digits, '_', '.', '-' (it names CollectedData_<scorer>.h5)")
    check_video(nf.video, video_fs)
    _needs(("pandas", "tables", "yaml", "cv2"), "writing a DeepLabCut project")
    images, count = _frames(nf, video_fs)
    import yaml
    name = posixpath.splitext(posixpath.basename(nf.video.rstrip("/")))[0] or "video"
    names = dlc_frame_names(nf.frames, count)
    from PIL import Image

    with _staging(out) as tmp:
        folder = tmp / "labeled-data" / name
        folder.mkdir(parents=True)
        for img, n in zip(images, names):
            Image.fromarray(np.asarray(img, dtype=np.uint8)).save(folder / n)
        machine_labels(nf, name, names).to_hdf(folder / "machinelabels-iter0.h5", key="df_with_missing", mode="w")
        h, w = np.asarray(images[0]).shape[:2]
        with open(tmp / "config.yaml", "w") as f:
            yaml.safe_dump(dlc_config(nf, out, scorer, w, h), f, sort_keys=False)
        _swap(tmp, out)
    return out


def _swap(new: Path, final: Path) -> None:
    """``new`` (a folder) in the place of ``final``, whatever was there removed once ``new`` is in place."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(new, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None and old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()
