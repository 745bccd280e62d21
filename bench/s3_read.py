#!/usr/bin/env python3
"""S3 read benchmark: the s3fs-fuse mount and posehub.storage against plain boto3, same run.

Starts a real S3 server on loopback (moto's server mode), uploads one large
object (--large-mb, default 200 MB, like a session's video) and --small-count
small ones (default 500 × 64 KiB, like labelled frames), sets up a workspace
the way the hub does for a server (STS credentials, s3fs mounts:
posehub.hub.workspace.prepare) and reads everything back --rounds times, the
order of the three ways rotated each round:

  boto3    get_object(...).read() in 8 MiB chunks; small objects one by one
           (what a notebook does without PoseHub)
  storage  posehub.storage.filesystem(): the large object through open()/read()
           with PoseHub's block size and read-ahead; the small ones with one
           fs.cat([...]) call (concurrent requests)
  mount    ~/buckets/<bucket>/...: open()/read() through s3fs-fuse

Prints MB/s per way (median of the rounds) and the ratio to boto3 (> 1 is
faster). Target: storage and mount >= 0.9x boto3 on the large object. Exit
status 0 when the storage target is met, 1 otherwise.

    .venv/bin/python bench/s3_read.py [--large-mb 200] [--small-count 500] [--small-kb 64]
        [--rounds 5] [--mount-option parallel_count=1 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "extensions"))

import boto3  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from posehub import storage, workspace  # noqa: E402
from posehub.config import DEFAULT_CONFIG, validate  # noqa: E402

CHUNK = 8 * 2**20
BUCKET = "bench-data"
LARGE_KEY = "videos/session.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{url}/moto-api/", timeout=2)
            return proc, url
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise SystemExit(f"moto server did not start; see {log}")
            time.sleep(0.2)


def upload(url: str, large_mb: int, small_count: int, small_kb: int) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                      aws_secret_access_key="bench")
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket="posehub-home")
    block = os.urandom(2**20)
    with tempfile.TemporaryFile() as f:
        for _ in range(large_mb):
            f.write(block)
        f.seek(0)
        s3.upload_fileobj(f, BUCKET, LARGE_KEY)
    keys = [f"frames/img{i:04d}.png" for i in range(small_count)]
    for i, k in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=k, Body=os.urandom(small_kb * 1024))
        if i % 100 == 99:
            print(f"  uploaded {i + 1}/{small_count} small objects", flush=True)
    return keys


# ---------------------------------------------------------------- the three ways


def boto3_large(s3) -> int:
    body = s3.get_object(Bucket=BUCKET, Key=LARGE_KEY)["Body"]
    n = 0
    while chunk := body.read(CHUNK):
        n += len(chunk)
    return n


def boto3_small(s3, keys) -> int:
    return sum(len(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys)


def storage_large(fs) -> int:
    n = 0
    with fs.open(storage.url(BUCKET, LARGE_KEY), "rb") as f:
        while chunk := f.read(CHUNK):
            n += len(chunk)
    return n


def storage_small(fs, keys) -> int:
    return sum(len(v) for v in fs.cat([storage.url(BUCKET, k) for k in keys]).values())


def file_large(path: Path) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            n += len(chunk)
    return n


def file_small(root: Path, keys) -> int:
    return sum(len((root / k).read_bytes()) for k in keys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large-mb", type=int, default=200)
    ap.add_argument("--small-count", type=int, default=500)
    ap.add_argument("--small-kb", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mount-option", action="append", default=[], metavar="OPT",
                    help="extra s3fs -o option for the mount (buckets.mount.options), repeatable")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="posehub-s3bench-"))
    proc, url = start_moto(work / "moto.log")
    home = work / "home" / "bench"
    home.mkdir(parents=True)
    cfg = None
    try:
        print(f"S3 server (moto) at {url}; uploading {args.large_mb} MB + {args.small_count} x {args.small_kb} KiB",
              flush=True)
        keys = upload(url, args.large_mb, args.small_count, args.small_kb)
        (work / "hub-keys").write_text("hub:hub\n")
        raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
        raw["hub"]["state_dir"] = str(work / "state")
        raw["hub"]["data_dir"] = str(work / "data")
        raw["buckets"] = {"backend": "s3", "endpoint_url": url, "hub_keys_file": str(work / "hub-keys"),
                          "sts": {"role_arn": "arn:aws:iam::123456789012:role/posehub-users"},
                          "shared": [{"name": BUCKET}], "home": {"name": "posehub-home"},
                          "mount": {"options": args.mount_option}}
        cfg = validate(raw)
        manifest = workspace.prepare(cfg, "bench", [], home)
        os.environ[storage.MANIFEST_ENV] = str(manifest)
        entry = storage.bucket(BUCKET)
        if not entry.mounted:
            raise SystemExit(f"the bucket was not mounted: {entry.note}")
        creds = entry.credentials
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=creds["access_key_id"],
                          aws_secret_access_key=creds["secret_access_key"], aws_session_token=creds["session_token"])
        fs = storage.filesystem(BUCKET)
        mount = Path(entry.path)
        large_bytes = args.large_mb * 2**20
        small_bytes = args.small_count * args.small_kb * 1024
        ways = {
            "boto3": (lambda: boto3_large(s3), lambda: boto3_small(s3, keys)),
            "storage": (lambda: storage_large(fs), lambda: storage_small(fs, keys)),
            "mount": (lambda: file_large(mount / LARGE_KEY), lambda: file_small(mount, keys)),
        }
        times: dict[str, dict[str, list[float]]] = {w: {"large": [], "small": []} for w in ways}
        order = list(ways)
        for r in range(args.rounds):
            for what, expected in (("large", large_bytes), ("small", small_bytes)):
                for w in order:
                    t0 = time.perf_counter()
                    n = ways[w][0 if what == "large" else 1]()
                    dt = time.perf_counter() - t0
                    if n != expected:
                        raise SystemExit(f"{w} read {n} bytes of the {what} data, expected {expected}")
                    times[w][what].append(dt)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{w} {times[w]['large'][-1]:.2f}s/{times[w]['small'][-1]:.2f}s" for w in order), flush=True)
            order = order[1:] + order[:1]
    finally:
        if cfg is not None:
            workspace.release(cfg, home)
        os.killpg(proc.pid, signal.SIGTERM)

    med = {w: {k: statistics.median(v) for k, v in t.items()} for w, t in times.items()}
    rows = []
    print(f"\n{'way':8} {'large MB/s':>11} {'x boto3':>8} {'small MB/s':>11} {'objects/s':>10} {'x boto3':>8}")
    for w in ways:
        large_mbps = large_bytes / 2**20 / med[w]["large"]
        small_mbps = small_bytes / 2**20 / med[w]["small"]
        rl = med["boto3"]["large"] / med[w]["large"]
        rs = med["boto3"]["small"] / med[w]["small"]
        rows.append({"way": w, "large_s": med[w]["large"], "large_mb_s": large_mbps, "large_ratio": rl,
                     "small_s": med[w]["small"], "small_mb_s": small_mbps,
                     "small_objects_s": args.small_count / med[w]["small"], "small_ratio": rs})
        print(f"{w:8} {large_mbps:11.1f} {rl:8.2f} {small_mbps:11.1f} {args.small_count / med[w]['small']:10.0f} "
              f"{rs:8.2f}")
    storage_ratio = rows[1]["large_ratio"]
    mount_ratio = rows[2]["large_ratio"]
    met = storage_ratio >= 0.9
    print(f"\ntarget: >= 0.90x boto3 on the large object. posehub.storage {storage_ratio:.2f}x "
          f"({'met' if met else 'NOT MET'}), mount {mount_ratio:.2f}x ({'met' if mount_ratio >= 0.9 else 'NOT MET'})")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
