"""What the notebooks show: a progress bar for training, tables of pixel errors, overlays, video frames."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

STUDY_PX = {"sleap": 1.96, "dlc": 3.44}  # test error reported by the SLEAP vs DeepLabCut study (open-field)
NAMES = {"sleap": "SLEAP (U-Net)", "dlc": "DeepLabCut (ResNet-50)"}


def progress_bar(epochs: int, description: str = "training"):
    """A callback for ``train_and_evaluate(progress=...)``: an ipywidgets progress bar in a notebook."""
    try:
        import ipywidgets as w
        from IPython.display import display

        bar = w.IntProgress(value=0, min=0, max=epochs, description=description, bar_style="info")
        label = w.Label(f"0/{epochs} epochs")
        display(w.HBox([bar, label]))
    except ImportError:  # plain Python
        bar = label = None

    def update(event: dict):
        text = f"{event['epoch']}/{event['epochs']} epochs" + (
            f", loss {event['loss']:.4g}" if event.get("loss") is not None else "")
        if bar is None:
            print(text, flush=True)
            return
        bar.value = event["epoch"]
        label.value = text
        if event["epoch"] >= event["epochs"]:
            bar.bar_style = "success"

    return update


def error_table(metrics: dict, bodyparts: list[str]):
    """Mean and RMSE pixel error per body part and overall, as a DataFrame."""
    import pandas as pd

    rows = {bp: metrics["per_bodypart"][bp] for bp in bodyparts}
    rows["all body parts"] = metrics["all"]
    df = pd.DataFrame(rows).T[["mean_px", "rmse_px", "median_px", "n", "missed"]]
    return df.astype({"n": int, "missed": int})


def comparison_table(runs: dict[str, dict], bodyparts: list[str]):
    """One row per tool: test error per body part, overall mean and RMSE, the study's figure beside it."""
    import pandas as pd

    rows = []
    for fw, m in runs.items():
        row = {"tool": NAMES.get(fw, fw)}
        row.update({f"{bp} (px)": m["per_bodypart"][bp]["mean_px"] for bp in bodyparts})
        row["mean (px)"] = m["all"]["mean_px"]
        row["RMSE (px)"] = m["all"]["rmse_px"]
        row["study (px)"] = STUDY_PX.get(fw, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("tool")


def overlay(ax, image, points, bodyparts, truth=None, title=""):
    ax.imshow(image)
    colors = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan"]
    for j, bp in enumerate(bodyparts):
        c = colors[j % len(colors)]
        if truth is not None and not np.isnan(truth[j]).any():
            ax.scatter(*truth[j], s=60, facecolors="none", edgecolors=c, linewidths=1.5)
        if not np.isnan(points[j]).any():
            ax.scatter(*points[j], s=18, color=c, label=bp)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def video_frames(path: str, indices, fs=None) -> list[np.ndarray]:
    """RGB frames ``indices`` of a video (a local path, or a bucket URL read through ``fs``)."""
    import cv2

    local = path
    tmp = None
    if fs is not None or "://" in path:
        tmp = tempfile.NamedTemporaryFile(suffix=Path(path).suffix, delete=False)
        if fs is None:
            import fsspec

            fs = fsspec.core.url_to_fs(path)[0]
        opener = fs.open
        with opener(path, "rb") as f:
            tmp.write(f.read())
        tmp.close()
        local = tmp.name
    cap = cv2.VideoCapture(local)
    try:
        if not cap.isOpened():
            raise ValueError(f"cannot open the video {path}")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        out = []
        for i in indices:
            if not 0 <= i < n:
                raise ValueError(f"frame {i} is outside the video {path} ({n} frames)")
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
            ok, frame = cap.read()
            if not ok:
                raise ValueError(f"cannot read frame {i} of {path}")
            out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        return out
    finally:
        cap.release()
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)


def frame_count(path: str) -> int:
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
