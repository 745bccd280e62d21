"""What an ensemble is asked to do, checked before anything starts; pure apart from reading the labels.

:func:`validate` turns the arguments of ``train_ensemble`` into an
:class:`EnsembleSpec` or raises :class:`EnsembleError` with a message saying
what is wrong: labels that cannot be read (they are loaded here, on the
client), an unknown framework, a bad number of members, seeds of the wrong
length or repeated, parameters the trainer refuses. No Dask call is made.

:func:`member_resources` picks the worker resource each member asks for from
``client.scheduler_info()``.
"""

from __future__ import annotations

import numbers
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path

from ..pose import trainers
from ..pose.labels import Labels, LabelsError, join, load as load_labels
from ..pose.split import Split, split as make_split

# Resources PoseHub's Dask workers advertise (the gateway sets DASK_DISTRIBUTED__WORKER__RESOURCES):
# GPU=<n> on GPU profiles, member=1 on CPU profiles (one training at a time per worker).
GPU_RESOURCE = "GPU"
MEMBER_RESOURCE = "member"
DEFAULT_VIDEO_FRAMES = 8


class EnsembleError(ValueError):
    """An ensemble that cannot start as asked; the message says why. Raised before any worker is used."""


def member_resources(scheduler_info: dict) -> dict:
    """The worker resources one member asks for: ``{"GPU": 1}`` when any worker advertises a GPU, else
    ``{"member": 1}`` when any advertises ``member``, else none (a plain LocalCluster)."""
    res = [w.get("resources") or {} for w in (scheduler_info.get("workers") or {}).values()]
    for name in (GPU_RESOURCE, MEMBER_RESOURCE):
        if any((r.get(name) or 0) > 0 for r in res):
            return {name: 1}
    return {}


@dataclass(frozen=True)
class FsRef:
    """An fsspec filesystem as its class and options, to rebuild on a worker (PoseHub's S3 filesystem
    class is made at run time and does not pickle by reference)."""

    cls: str  # "module:Name"
    options: dict

    @classmethod
    def of(cls, fs) -> FsRef | None:
        if fs is None:
            return None
        t = type(fs)
        options = dict(getattr(fs, "storage_options", {}) or {})
        ro = getattr(fs, "read_only_buckets", None)
        if ro is not None:  # posehub.storage.PoseHubS3FileSystem
            options["read_only_buckets"] = sorted(ro)
        try:
            found = getattr(import_module(t.__module__), t.__name__, None)
        except ImportError:
            found = None
        if found is t:
            return cls(f"{t.__module__}:{t.__name__}", options)
        protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        return cls(f"fsspec:{protocol}", options)

    def open(self):
        mod, _, name = self.cls.partition(":")
        if mod == "fsspec":
            import fsspec

            return fsspec.filesystem(name, **self.options)
        return getattr(import_module(mod), name)(**self.options)


@dataclass
class EnsembleSpec:
    id: str
    framework: str
    params: dict  # every parameter of the trainer, defaults filled in
    members: int
    seeds: list[int]
    split: Split  # the same for every member
    dest: str  # ensemble folder: a local path or a bucket URL
    video: str | None = None
    video_frames: int | list[int] = 0  # a number of frames sampled evenly, or the frame indices
    retries: int = 2
    image_shape: tuple[int, int] = (0, 0)  # (height, width) of the labelled frames
    labels: Labels | None = field(default=None, repr=False)
    dest_fs: object = field(default=None, repr=False)
    video_fs: object = field(default=None, repr=False)

    def member_dest(self, i: int) -> str:
        return join(self.dest, f"member-{i}")

    def describe(self) -> dict:
        """The spec as JSON-able data, for ``ensemble.json``."""
        return {"id": self.id, "framework": self.framework, "params": self.params, "members": self.members,
                "seeds": list(self.seeds), "train_fraction": self.split.train_fraction,
                "split_seed": self.split.seed, "video": self.video, "video_frames": self.video_frames,
                "retries": self.retries, "dest": self.dest,
                "labels": {"source": self.labels.source if self.labels else "",
                           "frames": len(self.labels) if self.labels else 0,
                           "bodyparts": list(self.labels.bodyparts) if self.labels else [],
                           "skeleton": [list(e) for e in self.labels.skeleton] if self.labels else []}}


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def new_id(framework: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{framework}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def check_members(members) -> int:
    if not _is_int(members) or members < 1:
        raise EnsembleError(f"members must be a whole number >= 1, got {members!r}")
    return int(members)


def check_seeds(seeds, members: int) -> list[int]:
    if seeds is None:
        return list(range(members))
    try:
        seeds = list(seeds)
    except TypeError:
        raise EnsembleError(f"seeds must be a list of {members} whole numbers, got {seeds!r}") from None
    bad = [s for s in seeds if not _is_int(s)]
    if bad:
        raise EnsembleError(f"seeds must be whole numbers, got {bad[0]!r}")
    if len(seeds) != members:
        raise EnsembleError(f"{len(seeds)} seed(s) for {members} member(s): give one seed per member")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise EnsembleError(f"seed {dup[0]} is given twice: each member needs its own seed")
    return [int(s) for s in seeds]


def check_framework(framework, params) -> tuple[str, dict]:
    try:
        trainer = trainers.get(framework)()
    except trainers.TrainerError as e:
        raise EnsembleError(str(e)) from None
    if params is not None and not isinstance(params, dict):
        raise EnsembleError(f"config must be a dict of {trainer.name} parameters, got {type(params).__name__}")
    try:
        return trainer.name, trainer.params(params)
    except trainers.TrainerError as e:
        raise EnsembleError(str(e)) from None


def check_labels(labels, fs=None) -> Labels:
    if isinstance(labels, Labels):
        return labels
    if not isinstance(labels, (str, Path)):
        raise EnsembleError(f"labels must be a posehub Labels or the path/URL of a labels file, got "
                            f"{type(labels).__name__}")
    try:
        return load_labels(str(labels), fs=fs)
    except LabelsError as e:
        raise EnsembleError(f"labels: {e}") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise EnsembleError(f"labels: cannot read {labels}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a bucket that cannot be reached (credentials, network, no such bucket)
        raise EnsembleError(f"labels: cannot read {labels}: {type(e).__name__}: {e}") from None


def check_video(video, video_frames, fs=None) -> tuple[str | None, int | list[int]]:
    if video is None:
        return None, 0
    video = str(video)
    if video_frames is None:
        video_frames = DEFAULT_VIDEO_FRAMES
    if _is_int(video_frames):
        if video_frames < 0:
            raise EnsembleError(f"video_frames must be >= 0, got {video_frames}")
        frames: int | list[int] = int(video_frames)
    else:
        try:
            frames = list(video_frames)
        except TypeError:
            raise EnsembleError(f"video_frames must be a number of frames or a list of frame indices, "
                                f"got {video_frames!r}") from None
        if not all(_is_int(i) and i >= 0 for i in frames) or len(set(frames)) != len(frames):
            raise EnsembleError(f"video_frames must be distinct frame indices >= 0, got {video_frames!r}")
        frames = [int(i) for i in frames]
    try:
        if fs is not None:
            exists = fs.exists(video)
        elif "://" in video:
            import fsspec

            vfs, path = fsspec.core.url_to_fs(video)
            exists = vfs.exists(path)
        else:
            exists = Path(video).is_file()
    except (OSError, ValueError) as e:
        raise EnsembleError(f"video {video}: cannot be reached: {e}") from None
    if not exists:
        raise EnsembleError(f"video {video}: no such file")
    return video, frames


def default_dest(ensemble_id: str):
    """``ensembles/<id>`` under the user's home prefix, and its filesystem."""
    from .. import storage

    try:
        return storage.url("home", f"ensembles/{ensemble_id}"), storage.filesystem("home")
    except storage.StorageError as e:
        raise EnsembleError(f"no dest given and the home prefix is not available ({e}); pass dest= (a folder "
                            "or bucket URL) and dest_fs=") from None


def validate(labels, framework, members=3, config=None, seeds=None, *, train_fraction=0.8, split_seed=0,
             labels_fs=None, video=None, video_frames=None, video_fs=None, dest=None, dest_fs=None,
             retries=2, name=None) -> EnsembleSpec:
    """Every check ``train_ensemble`` makes before it starts anything; an :class:`EnsembleSpec` or
    :class:`EnsembleError`."""
    fw, params = check_framework(framework, config)
    n = check_members(members)
    seed_list = check_seeds(seeds, n)
    if not _is_int(retries) or retries < 0:
        raise EnsembleError(f"retries must be a whole number >= 0, got {retries!r}")
    if not _is_int(split_seed):
        raise EnsembleError(f"split_seed must be a whole number, got {split_seed!r}")
    lab = check_labels(labels, labels_fs)
    try:
        s = make_split(lab, train_fraction, split_seed)
        shape = tuple(int(x) for x in lab.read_image(0).shape[:2])
    except LabelsError as e:
        raise EnsembleError(f"labels: {e}") from None
    except (OSError, ValueError) as e:  # an image that is not one
        raise EnsembleError(f"labels: cannot read the frame {lab.frame_path(0)}: {e}") from None
    vid, vframes = check_video(video, video_frames, video_fs)
    eid = name or new_id(fw)
    if not isinstance(eid, str) or not eid or "/" in eid:
        raise EnsembleError(f"name must be a non-empty string without '/', got {eid!r}")
    if dest is None:
        dest, dest_fs = default_dest(eid)
    return EnsembleSpec(id=eid, framework=fw, params=params, members=n, seeds=seed_list, split=s, dest=str(dest),
                        video=vid, video_frames=vframes, retries=int(retries), image_shape=shape, labels=lab,
                        dest_fs=dest_fs, video_fs=video_fs)
