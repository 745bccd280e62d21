"""The label-next loop's steps, run in the pose image's environment by test_labelling.py.

    .envs/pose/bin/python tests/pose/label_next_steps.py {ensemble,sleap,sleap-gui,dlc,widget} OUT DATA [ENSEMBLE]

``ensemble`` trains a real, tiny SLEAP ensemble without Dask: two members run by
``posehub.ensemble.member`` (what a Dask worker's child process runs) on 20 open-field frames, each
predicting the held-out frames and 6 frames of the open-field video; ``posehub.ensemble.results`` combines
and writes them under ``OUT/ens``. The other steps make the frames to label next into a project, label 3
of them as a labeller would (sleap-io; SLEAP's own GUI, offscreen; napari-deeplabcut's reader and writer),
read them back and train on them with the labels the ensemble had. Each prints one JSON line.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("WANDB_MODE", "disabled")

CSV = "labeled-data/m4s1/CollectedData_Pranav.csv"
TINY_SLEAP = {"epochs": 1, "scale": 0.25, "filters": 4, "max_stride": 8, "batch_size": 4, "augment": False,
              "validation_fraction": 0, "device": "cpu"}
TINY_DLC = {"epochs": 1, "crop": 128, "batch_size": 4, "weights": "scratch", "device": "cpu"}
TOP = 5
LABELLED = 3  # frames the labeller labels


def listed(a) -> list:
    """An array as JSON (NaN as None)."""
    return [listed(x) for x in a] if np.ndim(a) else (None if np.isnan(a) else float(a))


def ensemble(out: Path, data: Path) -> dict:
    from posehub.ensemble.member import MemberJob, run
    from posehub.ensemble.results import build, write
    from posehub.ensemble.spec import validate
    from posehub.pose import load_labels

    labels = load_labels(str(data / CSV)).subset(range(0, 116, 6))
    video = str(sorted((data / "videos").glob("*.mp4"))[0])
    spec = validate(labels, "sleap", 2, TINY_SLEAP, [0, 1], dest=str(out / "ens"), video=video, video_frames=6,
                    name="label-next-test")
    outcomes = []
    for i in range(spec.members):
        job = MemberJob(spec.id, i, spec.seeds[i], spec.framework, spec.params, spec.split, spec.labels,
                        spec.member_dest(i), video=spec.video, video_frames=spec.video_frames)
        work = out / f"work-{i}"
        work.mkdir()
        done = run(job, work, lambda msg: None)
        with np.load(done["predictions"]) as z:
            predictions = {k: z[k] for k in z.files}
        outcomes.append({"status": "done", "seed": spec.seeds[i], "attempts": 1, "url": done["url"],
                         "metrics": done["metrics"], "train_s": done["train_s"], "predictions": predictions})
        shutil.rmtree(work)
    result = build(spec, outcomes)
    write(result)
    return {"dest": spec.dest, "video": video, "video_frames": result.video_frames}


def expected(ens: Path) -> dict:
    """The top video frames of label_next.csv and their consensus (consensus.csv), read here on their own."""
    doc = json.loads((ens / "ensemble.json").read_text())
    bodyparts = doc["spec"]["labels"]["bodyparts"]
    with open(ens / "label_next.csv") as f:
        frames = [int(r["frame"]) for r in csv.DictReader(f) if r["source"] == "video"][:TOP]
    with open(ens / "consensus.csv") as f:
        rows = {int(r["frame"]): r for r in csv.DictReader(f) if r["source"] == "video"}
    cell = lambda v: float(v) if v else float("nan")  # noqa: E731
    points = np.array([[[cell(rows[i][f"{bp}_{c}"]) for c in "xy"] for bp in bodyparts] for i in frames])
    scores = np.array([[cell(rows[i][f"{bp}_score"]) for bp in bodyparts] for i in frames])
    return {"frames": frames, "points": points, "scores": scores, "bodyparts": bodyparts,
            "video": doc["spec"]["video"]}


def chosen_points(n_bodyparts: int) -> np.ndarray:
    """Where the labeller puts the body parts on each of the frames it labels (inside the 640x480 frame)."""
    rng = np.random.default_rng(7)
    return np.round(rng.uniform(30, 450, (LABELLED, n_bodyparts, 2)), 2)


def merged_training(new, data: Path, framework: str, params: dict, out: Path, every: int) -> dict:
    from posehub.pose import load_labels, merge_labels
    from posehub.pose.run import train_and_evaluate

    old = load_labels(str(data / CSV)).subset(range(0, 116, every))
    both = merge_labels(old, new)
    train_and_evaluate(both, framework, params, seed=0, workdir=out / f"run-{framework}")
    rec = json.loads((out / f"run-{framework}" / "run.json").read_text())
    return {"sets": rec["labels"]["sets"], "frames": rec["labels"]["frames"], "inputs": sorted(rec["inputs_sha256"]),
            "old": {"source": old.source, "frames": len(old), "sha256": old.fingerprint()},
            "new": {"source": new.source, "frames": len(new), "sha256": new.fingerprint()},
            "merged_root": both.root, "merged_frames_absolute": all(os.path.isabs(f) for f in both.frames)}


def sleap(out: Path, data: Path, ens: Path) -> dict:
    import sleap_io as sio

    from posehub.pose import load_labels, show
    from posehub.pose.labelling import label_next_project, sleap_project

    exp = expected(ens)
    slp = label_next_project(str(ens), top=TOP)  # the ensemble's framework (SLEAP), in its folder
    got = {"path": str(slp), "files": sorted(os.listdir(slp.parent))}
    labels = sio.load_slp(str(slp))
    images = show.video_frames(exp["video"], exp["frames"])
    got["suggestions"] = [int(s.frame_idx) for s in labels.suggestions]
    got["nodes"] = list(labels.skeletons[0].node_names)
    got["instances"] = [[type(i).__name__ for i in lf.instances] for lf in labels.labeled_frames]
    by_frame = {lf.frame_idx: lf for lf in labels.labeled_frames}
    got["predicted_equal"] = [bool(np.allclose(by_frame[f].instances[0].numpy()[:, :2], exp["points"][k], atol=1e-3,
                                               equal_nan=True)) for k, f in enumerate(exp["frames"])]
    got["scores_equal"] = [bool(np.allclose(by_frame[f].instances[0].numpy(scores=True)[:, 2], exp["scores"][k],
                                            atol=1e-3)) for k, f in enumerate(exp["frames"])]
    got["embedded"] = bool(labels.videos[0].backend.has_embedded_images)
    got["images_equal"] = [bool(np.array_equal(np.asarray(by_frame[f].image), images[k]))
                           for k, f in enumerate(exp["frames"])]
    alone = out / "elsewhere" / "copy.slp"  # the .slp on its own, without the video beside it
    alone.parent.mkdir()
    shutil.copy(slp, alone)
    copy = sio.load_slp(str(alone))
    got["alone_images_equal"] = [bool(np.array_equal(np.asarray(lf.image), images[exp["frames"].index(lf.frame_idx)]))
                                 for lf in copy.labeled_frames]

    # the labeller: a user instance on 3 suggested frames, saved as sleap-label saves (the same file, its defaults)
    pts = chosen_points(len(exp["bodyparts"]))
    chosen = got["suggestions"][:LABELLED]
    for k, f in enumerate(chosen):
        by_frame[f].instances.append(sio.Instance.from_numpy(pts[k], skeleton=labels.skeletons[0]))
    sio.save_file(labels=labels, filename=str(slp))
    new = load_labels(str(slp))
    names = [f"video0_frame{f:06d}.png" for f in chosen]
    got["loaded"] = {"frames": new.frames, "names": names, "bodyparts": new.bodyparts,
                     "points_equal": bool(np.allclose(new.points, pts)) if new.frames == names else False,
                     "images_equal": [bool(np.array_equal(new.read_image(i), images[exp["frames"].index(f)]))
                                      for i, f in enumerate(chosen)]}
    got["train"] = merged_training(new, data, "sleap", TINY_SLEAP, out, every=6)

    frames_dir = slp.with_name(slp.stem + ".frames")
    got["frames_dir_before"] = frames_dir.is_dir()
    again = sleap_project(str(ens), slp, top=2, overwrite=True)
    fresh = sio.load_slp(str(again))
    got["overwritten"] = {"frames_dir": frames_dir.exists(), "suggestions": len(fresh.suggestions),
                          "user": sum(type(i).__name__ == "Instance" for lf in fresh for i in lf.instances)}
    return got


def sleap_gui(out: Path, data: Path, ens: Path) -> dict:
    """SLEAP's own GUI (sleap-label's MainWindow, offscreen): it opens the project, a user instance is placed on
    each of 3 suggested frames through its commands, and it saves."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["HOME"] = str(out / "home")  # sleap-label keeps its preferences there
    from qtpy.QtWidgets import QApplication
    from sleap.gui.app import MainWindow  # first: on Linux it starts this process again, with Qt's library path

    from posehub.pose import load_labels
    from posehub.pose.labelling import sleap_project

    exp = expected(ens)
    slp = sleap_project(str(ens), out / "gui" / "label_next.slp", top=TOP)
    app = QApplication([])

    win = MainWindow(labels_path=str(slp))
    got = {"suggestions": len(win.state["labels"].suggestions), "frames": []}
    pts = chosen_points(len(exp["bodyparts"]))
    for k in range(LABELLED):
        win.commands.nextSuggestedFrame()
        win.commands.newInstance()
        frame = win.state["labeled_frame"]
        inst = [i for i in frame.instances if type(i).__name__ == "Instance"][-1]
        # as a labeller drags each node into place (and marks the ones the consensus had not found as visible)
        win.commands.setPointLocations(inst, {bp: tuple(pts[k][j]) for j, bp in enumerate(exp["bodyparts"])})
        for bp in exp["bodyparts"]:
            win.commands.setInstancePointVisibility(inst, bp, True)
        got["frames"].append(int(frame.frame_idx))
    win.commands.saveProject()
    win.close()
    app.quit()
    new = load_labels(str(slp))
    got["loaded"] = {"frames": new.frames, "points_equal": bool(np.allclose(new.points, pts))}
    return got


def dlc(out: Path, data: Path, ens: Path) -> dict:
    import pandas as pd
    import yaml
    from PIL import Image
    from napari_deeplabcut.config.models import AnnotationKind
    from napari_deeplabcut.core.io import read_hdf_single, write_hdf
    from napari_deeplabcut.core.metadata import parse_points_metadata
    from napari_deeplabcut.core.provenance import apply_gt_save_target

    from posehub.pose import load_labels, show
    from posehub.pose.labelling import dlc_project

    exp = expected(ens)
    proj = dlc_project(str(ens), out / "label-next", top=TOP)
    cfg = yaml.safe_load((proj / "config.yaml").read_text())
    got = {"config": {k: cfg[k] for k in ("Task", "scorer", "project_path", "bodyparts", "video_sets",
                                          "numframes2pick", "multianimalproject", "engine")}}
    folder = next((proj / "labeled-data").iterdir())
    got["folder"] = folder.name
    got["files"] = sorted(p.name for p in folder.iterdir())
    images = show.video_frames(exp["video"], exp["frames"])
    names = [f"img{f:04d}.png" for f in exp["frames"]]  # DeepLabCut's width for a 2330-frame video: 4 digits
    got["images_equal"] = [(folder / n).exists() and bool(np.array_equal(
        np.asarray(Image.open(folder / n).convert("RGB")), images[k])) for k, n in enumerate(names)]

    # napari-deeplabcut opens the folder: the machine labels are the consensus
    (data_m, props, _), = read_hdf_single(folder / "machinelabels-iter0.h5", kind=AnnotationKind.MACHINE)
    paths = props["metadata"]["paths"]
    machine = np.full_like(exp["points"], np.nan)
    for (i, y, x), bp in zip(data_m, props["properties"]["label"]):
        k = exp["frames"].index(int(Path(paths[int(i)]).stem[3:]))
        machine[k, exp["bodyparts"].index(bp)] = [x, y]
    got["machine_paths"] = paths
    got["machine_equal"] = bool(np.allclose(machine, exp["points"], atol=1e-3, equal_nan=True))
    got["machine_scorer"] = pd.read_hdf(folder / "machinelabels-iter0.h5").columns.get_level_values("scorer")[0]

    # the labeller places every body part on 3 frames and saves: napari-deeplabcut promotes machine labels to
    # CollectedData_<the config's scorer> (its save dialog) and writes them with its own writer
    pts = chosen_points(len(exp["bodyparts"]))
    chosen = list(range(LABELLED))  # rows of the layer's paths
    rows, labels_ = [], []
    for k, i in enumerate(chosen):
        for j, bp in enumerate(exp["bodyparts"]):
            rows.append([i, pts[k][j][1], pts[k][j][0]])
            labels_.append(bp)
    n = len(rows)
    attrs = dict(props)
    meta = parse_points_metadata(props["metadata"], drop_header=False)
    promoted = apply_gt_save_target(meta, anchor=str(folder), scorer=cfg["scorer"])
    attrs["metadata"] = {**props["metadata"], "save_target": promoted.save_target.model_dump(mode="python")}
    attrs["properties"] = {"label": np.array(labels_, dtype=object), "id": np.array([""] * n, dtype=object),
                           "likelihood": np.ones(n), "valid": np.ones(n, dtype=bool)}
    got["written"] = sorted(Path(p).name for p in write_hdf("__dlc__.h5", np.array(rows, float), attrs))
    new = load_labels(str(proj))
    want = [f"labeled-data/{folder.name}/{Path(paths[i]).name}" for i in chosen]
    got["loaded"] = {"frames": new.frames, "want": want, "root": new.root, "scorer": new.scorer,
                     "source": Path(new.source).name,
                     "points_equal": bool(np.allclose(new.points, pts)) if new.frames == want else False,
                     "images_equal": [bool(np.array_equal(new.read_image(i),
                                                          images[exp["frames"].index(int(Path(f).stem[3:]))]))
                                      for i, f in enumerate(new.frames)]}
    (folder / f"CollectedData_{cfg['scorer']}.csv").unlink()  # the .h5 alone: read with PyTables
    h5 = load_labels(str(proj))
    got["h5_alone"] = {"source": Path(h5.source).name, "same": h5.frames == new.frames
                       and bool(np.allclose(h5.points, new.points))}
    got["train"] = merged_training(h5, data, "dlc", TINY_DLC, out, every=12)
    return got


def widget(out: Path, data: Path) -> dict:
    """The ensemble widget after an ensemble finished (a DeepLabCut one, its members' outcomes made up from the
    labels): "Label next frames" writes the project; "Open in Desktop" says that no desktop is running."""
    os.environ["HOME"] = str(out / "home")
    from types import SimpleNamespace

    from posehub.ensemble.results import build
    from posehub.ensemble.spec import validate
    from posehub.ensemble.widget import EnsembleWidget
    from posehub.pose import load_labels

    labels = load_labels(str(data / CSV)).subset(range(0, 116, 12))
    video = str(sorted((data / "videos").glob("*.mp4"))[0])
    frames = [10, 500, 1000, 2000]
    spec = validate(labels, "dlc", 2, {"epochs": 1, "weights": "scratch"}, [0, 1], dest=str(out / "ens"),
                    video=video, video_frames=frames, name="widget-test")
    outcomes = []
    for m in range(2):
        rng = np.random.default_rng(m)
        test = labels.points[list(spec.split.test)] + rng.normal(0, 1, (len(spec.split.test), 4, 2))
        vid = np.tile([[300.0, 200.0]], (len(frames), 4, 1)) + rng.normal(0, 5 * (m + 1), (len(frames), 4, 2))
        outcomes.append({"status": "done", "seed": m, "metrics": {"all": {"mean_px": 1.0, "rmse_px": 1.0}},
                         "predictions": {"test_frames": np.array(spec.split.test), "test_points": test,
                                         "test_scores": np.full(test.shape[:-1], 0.9), "stride": np.array(1.0),
                                         "video_frames": np.array(frames), "video_points": vid,
                                         "video_scores": np.full(vid.shape[:-1], 0.8)}})
    result = build(spec, outcomes)
    ui = EnsembleWidget()
    got = {"hidden_before": ui.label_box.layout.display}
    ui.ensemble = SimpleNamespace(spec=spec)
    ui._finish(result)
    got["shown_after"] = ui.label_box.layout.display
    got["open_disabled"] = ui.open_desktop.disabled
    ui.label_top.value = 3

    def click(button):
        button.click()
        if button is ui.label_next:
            ui._label_thread.join(120)
        return ui.label_status.value

    got["written"] = click(ui.label_next)
    got["project"] = str(ui.project)
    got["project_files"] = sorted(str(p.relative_to(ui.project)) for p in Path(ui.project).rglob("*") if p.is_file())
    got["open_enabled"] = not ui.open_desktop.disabled
    got["again"] = click(ui.label_next)
    got["desktop"] = click(ui.open_desktop)
    result.dest = spec.dest = "s3://posehub-home/alice/ensembles/widget-test"  # an ensemble in a bucket
    ui._finish(result)
    got["bucket"] = click(ui.label_next)
    got["bucket_project"] = str(ui.project)
    return got


if __name__ == "__main__":
    mode, out, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    ens = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    steps = {"ensemble": lambda: ensemble(out, data), "sleap": lambda: sleap(out, data, ens),
             "sleap-gui": lambda: sleap_gui(out, data, ens), "dlc": lambda: dlc(out, data, ens),
             "widget": lambda: widget(out, data)}
    result = steps[mode]()
    sys.stdout.flush()
    print(json.dumps(result, default=str))
