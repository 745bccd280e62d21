"""SLEAP ``.slp`` files into PoseHub's labels model (through sleap-io, in the pose image).

Single-animal labels: the first user-labelled instance of each labelled frame.
The frame images (embedded in the file, or in the videos it points to) are
written as PNG files into ``frames_dir`` (by default a ``<name>.frames`` folder
beside the file), so that every trainer reads them the same way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .labels import Labels, LabelsError


def load_slp(path: str, frames_dir: str | Path | None = None) -> Labels:
    try:
        import sleap_io as sio
    except ImportError:
        raise LabelsError(f"{path}: reading .slp files needs sleap-io (in the pose image)") from None
    if "://" in str(path):
        raise LabelsError(f"{path}: open .slp files from a mounted bucket folder (~/buckets/...) or a local copy")
    p = Path(path)
    if not p.is_file():
        raise LabelsError(f"{path}: no such labels file")
    try:
        slp = sio.load_slp(str(p))
    except Exception as e:  # noqa: BLE001 - h5py/sleap-io raise many kinds
        raise LabelsError(f"{path}: not a readable SLEAP file ({e})") from None
    if not slp.skeletons:
        raise LabelsError(f"{path}: no skeleton")
    if len(slp.skeletons) > 1:
        raise LabelsError(f"{path}: {len(slp.skeletons)} skeletons; PoseHub's trainers take one")
    bodyparts = list(slp.skeletons[0].node_names)
    frames_dir = Path(frames_dir) if frames_dir else _frames_dir(p)
    frames_dir.mkdir(parents=True, exist_ok=True)
    names, points = [], []
    from PIL import Image

    for lf in slp.labeled_frames:
        user = [inst for inst in lf.instances if type(inst).__name__ == "Instance"]
        if not user:
            continue
        vid = slp.videos.index(lf.video)
        name = f"video{vid}_frame{lf.frame_idx:06d}.png"
        target = frames_dir / name
        if not target.exists():
            img = np.asarray(lf.image)
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            Image.fromarray(img).save(target)
        names.append(name)
        points.append(user[0].numpy()[:, :2])
    if not names:
        raise LabelsError(f"{path}: no user-labelled instances")
    return Labels(bodyparts, names, np.array(points, dtype=float), root=str(frames_dir), scorer="sleap",
                  source=str(p), skeleton=[(e.source.name, e.destination.name) for e in slp.skeletons[0].edges])


def _frames_dir(p: Path) -> Path:
    d = p.with_name(p.stem + ".frames")
    try:
        d.mkdir(exist_ok=True)
        return d
    except OSError:  # a read-only bucket: frames go to a temporary folder
        return Path(tempfile.mkdtemp(prefix=f"posehub-{p.stem}-"))
