"""Watched folders, the pure part: what a watch may be, which files are new, when a watch must pause.

A watch is declared by its owner (or an admin, for a user): a bucket the owner sees and a prefix in it,
a model (a PoseHub run folder in the owner's home), a worker profile the owner may use, and where the
results go (a prefix of a bucket the owner may write). :func:`check_spec` turns the request into a
:class:`WatchSpec` or :class:`WatchRefused` with the sentence for the user; nothing here touches a
file, a bucket or the ledger.

What is new (:func:`to_queue`): a file is identified by its key and its ETag (S3's, or the MD5 of a
local file's content), so the same video copied again to the same key is not analysed twice, and a
changed file under the same key is. A local file is taken only once it has not changed for
``settle_seconds`` (a copy in progress is not a video yet); S3 objects appear whole.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
FIELDS = ("bucket", "prefix", "model", "profile", "out_prefix", "out_bucket")
MAX_PREFIX = 512
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class WatchRefused(ValueError):
    """A watch that cannot be made, or a change that cannot be made to one: the message says why."""


@dataclass(frozen=True)
class Bucket:
    """A bucket as one user sees it: its name for the user ("home" for their own prefix of the home bucket),
    the real bucket and the prefix the user's keys start with, and whether they may write it."""

    name: str
    bucket: str
    root: str  # "" or "<username>/" in the home bucket
    read_only: bool


@dataclass(frozen=True)
class WatchSpec:
    bucket: str  # the user's name for it
    prefix: str  # "" or ends with "/"
    model: str  # relative to the owner's home
    profile: str
    out_bucket: str
    out_prefix: str


@dataclass(frozen=True)
class Found:
    """An object under a watched prefix: its key (relative to the bucket as the user sees it)."""

    key: str
    etag: str
    size: int
    mtime: float | None = None  # seconds since the epoch (local files); None for S3


def clean_prefix(value, what: str) -> str:
    """``"a/b/"`` from ``"a/b"``, ``"/a/b/"``, ``"a//b"``; "" for the whole bucket. No ``..``, no control
    characters or backslashes."""
    if not isinstance(value, str):
        raise WatchRefused(f"{what} must be text (a prefix like 'videos/incoming/'), got {value!r}")
    if len(value) > MAX_PREFIX:
        raise WatchRefused(f"{what} is longer than {MAX_PREFIX} characters")
    if _BAD_CHARS.search(value):
        raise WatchRefused(f"{what} {value!r} has control characters or backslashes")
    parts = [p for p in value.strip().split("/") if p not in ("", ".")]
    if ".." in parts:
        raise WatchRefused(f"{what} {value!r} may not contain '..'")
    return "/".join(parts) + "/" if parts else ""


def clean_model(value) -> str:
    """The model's folder relative to the owner's home: ``runs/sleap`` from ``~/runs/sleap/``."""
    if not isinstance(value, str) or not value.strip():
        raise WatchRefused(f"model must be the path of a PoseHub run folder in your home (e.g. '~/runs/sleap'), "
                           f"got {value!r}")
    v = value.strip()
    if "://" in v:
        raise WatchRefused(f"model {v}: give a run folder in your home (e.g. '~/runs/sleap'), not a URL")
    if v.startswith("~/"):
        v = v[2:]
    elif v.startswith("/") or v.startswith("~"):
        raise WatchRefused(f"model {v}: give a run folder in your home, as '~/...' or relative to it")
    rel = clean_prefix(v, "model").rstrip("/")
    if not rel:
        raise WatchRefused("model must name a run folder, not your whole home")
    return rel


def check_spec(body, buckets: Sequence[Bucket], profiles: Mapping[str, str]) -> WatchSpec:
    """A new watch from the fields a user sent. ``buckets``: what the owner sees; ``profiles``: the worker
    profiles the owner may use (slug -> display name)."""
    if not isinstance(body, dict):
        raise WatchRefused("send a JSON object with bucket, prefix, model, profile and out_prefix")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise WatchRefused(f"unknown field(s) {', '.join(unknown)}: a watch has {', '.join(FIELDS)}")
    missing = [f for f in ("bucket", "model", "profile", "out_prefix") if body.get(f) in (None, "")]
    if missing:
        raise WatchRefused(f"missing: {', '.join(missing)}")
    by_name = {b.name: b for b in buckets}
    names = ", ".join(sorted(by_name)) or "none"

    def bucket(field: str) -> Bucket:
        name = body.get(field) or body["bucket"]
        if not isinstance(name, str) or name not in by_name:
            raise WatchRefused(f"You may not read bucket {name!r}: buckets you may use are {names}.")
        return by_name[name]

    src, dst = bucket("bucket"), bucket("out_bucket")
    prefix = clean_prefix(body.get("prefix") or "", "prefix")
    out_prefix = clean_prefix(body["out_prefix"], "out_prefix")
    if dst.read_only:
        raise WatchRefused(f"bucket {dst.name!r} is read-only for you: put the results in a bucket you may write "
                           "(out_bucket, e.g. 'home')")
    if not out_prefix:
        raise WatchRefused("out_prefix must be a folder (e.g. 'analysed/'), not the bucket's top")
    if src.bucket == dst.bucket and src.root == dst.root and (out_prefix.startswith(prefix) or
                                                             prefix.startswith(out_prefix)):
        raise WatchRefused(f"the results ({out_prefix}) may not be inside the watched prefix ({prefix or 'the whole bucket'}) "
                           "or contain it: pick another out_prefix")
    slug = body["profile"]
    if not isinstance(slug, str) or slug not in profiles:
        raise WatchRefused(f"Worker profile {slug!r} is not one you may use. Profiles you may use: "
                           f"{', '.join(sorted(profiles)) or 'none'}.")
    return WatchSpec(src.name, prefix, clean_model(body["model"]), slug, dst.name, out_prefix)


def is_video(key: str, suffixes: Iterable[str] = VIDEO_SUFFIXES) -> bool:
    name = posixpath.basename(key)
    return not name.startswith(".") and name.lower().endswith(tuple(s.lower() for s in suffixes))


def to_queue(found: Iterable[Found], known: set[tuple[str, str]], *, now: float, settle_seconds: float,
             suffixes: Iterable[str] = VIDEO_SUFFIXES) -> list[Found]:
    """The videos to analyse: not seen before with this ETag (``known``: (key, etag) pairs), and settled.
    In key order, each (key, etag) once."""
    out, seen = [], set(known)
    for f in sorted(found, key=lambda f: f.key):
        if not is_video(f.key, suffixes) or f.size <= 0 and f.mtime is None:
            continue
        if f.mtime is not None and now - f.mtime < settle_seconds:
            continue  # still being written
        if (f.key, f.etag) in seen:
            continue
        seen.add((f.key, f.etag))
        out.append(f)
    return out


def output_prefix(spec_out_prefix: str, key: str, watched_prefix: str) -> str:
    """Where one video's results go: the out prefix plus the video's folder below the watched prefix, so
    ``incoming/day1/a.mp4`` watched at ``incoming/`` goes to ``<out>day1/``."""
    rel = key[len(watched_prefix):] if key.startswith(watched_prefix) else key
    folder = posixpath.dirname(rel)
    return spec_out_prefix + (folder + "/" if folder else "")


def pause_notice(watch_id: int, bucket: str, prefix: str, why: str) -> str:
    return (f"Your watched folder #{watch_id} ({bucket}/{prefix}) is paused: {why} New videos there wait until "
            "you resume it on the Watched folders page.")
