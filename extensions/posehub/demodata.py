"""DeepLabCut's open-field example in the demo bucket, for the example notebooks.

The files come from ``../shared/data/openfield`` beside the repository when it
is there; otherwise they are downloaded once from DeepLabCut's public
repository into ``.state/downloads/openfield`` in the repository (and when that cannot be
reached, :class:`DemoDataError` says so and what to do). They are then copied
into ``buckets.demo_bucket``: a folder with ``backend: local``, an upload with
the hub's own keys with ``backend: s3``. Files already there with the same size
are skipped, so running it again is quick.

The example: 116 labelled 640x480 frames of a mouse in an open field, 4 body
parts (snout, left ear, right ear, tail base), one video. LGPL-3.0, from
github.com/DeepLabCut/DeepLabCut (examples/openfield-Pranav-2018-10-30).
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .hub.buckets import local_root
from .config import REPO_ROOT, PoseHubConfig

SHARED = REPO_ROOT.parent / "shared" / "data" / "openfield"
DOWNLOADS = REPO_ROOT / ".state" / "downloads" / "openfield"
UPSTREAM = ("https://raw.githubusercontent.com/DeepLabCut/DeepLabCut/main/examples/"
            "openfield-Pranav-2018-10-30/")
FILES = (["config.yaml", "labeled-data/m4s1/CollectedData_Pranav.csv", "labeled-data/m4s1/CollectedData_Pranav.h5",
          "videos/m3v1mp4.mp4"] + [f"labeled-data/m4s1/img{i:04d}.png" for i in range(116)])
LABELS = "labeled-data/m4s1/CollectedData_Pranav.csv"


class DemoDataError(Exception):
    pass


def source(say: Callable[[str], None] = print, fetch=urllib.request.urlopen) -> Path:
    """A local folder with every file of the example: ../shared, else a download (kept)."""
    if all((SHARED / f).is_file() for f in FILES):
        return SHARED
    dest = DOWNLOADS
    missing = [f for f in FILES if not (dest / f).is_file()]
    if missing:
        say(f"downloading DeepLabCut's open-field example ({len(missing)} files) from {UPSTREAM}")
    for n, f in enumerate(missing, 1):
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with fetch(UPSTREAM + f, timeout=30) as r, open(target.with_suffix(".part"), "wb") as out:
                shutil.copyfileobj(r, out)
        except (urllib.error.URLError, OSError) as e:
            target.with_suffix(".part").unlink(missing_ok=True)
            raise DemoDataError(
                f"cannot download {UPSTREAM + f}: {getattr(e, 'reason', e)}. The example notebooks need DeepLabCut's "
                f"open-field example: put a copy of its folder examples/openfield-Pranav-2018-10-30 at {SHARED} "
                f"(or {dest}) and run `posehub demo-data` again") from None
        target.with_suffix(".part").rename(target)
        if n % 20 == 0 or n == len(missing):
            say(f"  {n}/{len(missing)} files")
    return dest


def install(cfg: PoseHubConfig, say: Callable[[str], None] = print) -> str | None:
    """Copy the example into the demo bucket. Returns where it is, or None with no demo bucket."""
    bucket = cfg["buckets"]["demo_bucket"]
    if not bucket:
        say("no buckets.demo_bucket in the config: no demo data")
        return None
    src = source(say)
    if cfg["buckets"]["backend"] == "local":
        return _to_folder(src, local_root(cfg) / bucket, say)
    return _to_s3(cfg, src, bucket, say)


def _to_folder(src: Path, dest: Path, say) -> str:
    copied = 0
    for f in FILES:
        s, d = src / f, dest / f
        if d.is_file() and d.stat().st_size == s.stat().st_size:
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, d)
        copied += 1
    say(f"open-field example in bucket folder {dest} ({copied} files copied, {len(FILES) - copied} already there)")
    return str(dest)


def _to_s3(cfg: PoseHubConfig, src: Path, bucket: str, say) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    from .hub.s3creds import hub_session

    b = next(x for x in cfg["buckets"]["shared"] if x["name"] == bucket)
    endpoint = b["endpoint_url"] or cfg["buckets"]["endpoint_url"] or None
    client = hub_session(cfg).client("s3", endpoint_url=endpoint,
                                     region_name=b["region"] or cfg["buckets"]["region"])
    copied = 0
    try:
        have = {o["Key"]: o["Size"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])}
        for f in FILES:
            if have.get(f) == (src / f).stat().st_size:
                continue
            client.upload_file(str(src / f), bucket, f)
            copied += 1
    except (BotoCoreError, ClientError) as e:
        raise DemoDataError(f"cannot write the open-field example to s3://{bucket}/ with the hub's keys: {e}") from None
    say(f"open-field example in s3://{bucket}/ ({copied} files uploaded, {len(FILES) - copied} already there)")
    return f"s3://{bucket}/"
