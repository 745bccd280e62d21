"""The ``posehub-storage`` sidecar of a pod (:mod:`posehub.k8s.podstorage`): mounts and manifest, kept fresh.

    python3 -m posehub.k8s.podsync        (in the sidecar; everything comes from its environment)

1. Asks the credential endpoint of whoever issued the lease (the hub, or the Dask gateway) for the pod's
   STS credentials, with the lease's secret, until it answers (the issuer may still be fetching them);
2. mounts every bucket of the plan with one machine's :func:`posehub.hub.mounts.mount` under
   ``/mnt/posehub`` (s3fs renews its credentials from the same endpoint by itself; a bucket that cannot be
   mounted gets a ``NOT-MOUNTED.txt`` saying why, and the manifest says so too);
3. writes the manifest :mod:`posehub.storage` reads, and writes it again with each renewed set, well before
   the set it holds ends (the issuer renews 25 minutes before the end; botocore re-reads within 15);
4. on SIGTERM (the pod stops) unmounts everything and exits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..hub import mounts, s3lease
from ..hub.s3creds import Credentials
from ..hub.s3plan import S3FS_CREDENTIALS_ENV, S3FS_CREDENTIALS_PATH, BucketAccess
from ..hub.workspace import with_credentials
from . import podstorage

log = logging.getLogger("posehub.podsync")
CHECK_EVERY = timedelta(minutes=5)  # how often the sidecar looks for a renewed set, at most


class Unavailable(Exception):
    """The endpoint gave no credentials (yet); the message says what it answered."""


def fetch(endpoint: str, relative_uri: str, timeout: float = 10) -> Credentials:
    """The lease's current credentials from the issuer's endpoint (the ECS document s3fs reads too)."""
    url = endpoint.rstrip("/") + S3FS_CREDENTIALS_PATH + relative_uri
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - the issuer's in-cluster address
            doc = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise Unavailable(f"the credential endpoint answered {e.code} ({e.read()[:200].decode(errors='replace')})")
    except (OSError, ValueError) as e:
        raise Unavailable(f"the credential endpoint {endpoint} could not be read: {e}") from None
    return Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token", ""), doc["Expiration"])


def next_check(now: datetime, creds: Credentials) -> datetime:
    """When to look again: in :data:`CHECK_EVERY`, or sooner when the set nears its end."""
    ends = s3lease.parse_time(creds.expiration)
    return now + max(s3lease.RETRY_MIN, min(CHECK_EVERY, (ends - now) / 4))


def write_manifest(path: Path, data: dict) -> None:
    """Atomically (a reader never sees half a file), readable by the workspace's account."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def mount_all(accesses: list[BucketAccess], creds: Credentials, root: Path, endpoint: str, relative_uri: str,
              timeout: float, options: list[str]) -> dict[str, str]:
    """Mount every bucket; ``{name: why not}`` for those that could not be."""
    notes = {}
    for a in accesses:
        r = mounts.mount(a, creds, root, timeout=timeout, extra=options, owner=(podstorage.UID, podstorage.GID),
                         refresh=(endpoint, relative_uri))
        if r.mounted:
            log.info("mounted %s at %s", a.url, r.path)
        else:
            notes[a.name] = r.reason
            log.warning("%s not mounted: %s", a.url, r.reason)
    return notes


def manifest_with(data: dict, creds: Credentials, notes: dict[str, str]) -> dict:
    out = with_credentials(data, creds)
    return dict(out, buckets=[dict(e, mounted=e["name"] not in notes, note=notes.get(e["name"], ""))
                              for e in out["buckets"]])


def run(environ=os.environ, stop: threading.Event | None = None, root: Path = Path(podstorage.MOUNT_ROOT),
        manifest_path: Path = Path(podstorage.MANIFEST_PATH), now=lambda: datetime.now(timezone.utc)) -> None:
    stop = stop or threading.Event()
    endpoint, relative_uri = environ[podstorage.ENDPOINT_ENV], environ[S3FS_CREDENTIALS_ENV]
    data = json.loads(environ[podstorage.MANIFEST_ENV])
    accesses = [BucketAccess(**a) for a in json.loads(environ[podstorage.BUCKETS_ENV])]
    timeout = float(environ.get(podstorage.TIMEOUT_ENV) or 10)
    options = json.loads(environ.get(podstorage.OPTIONS_ENV) or "[]")
    wait = 1.0
    while not stop.is_set():  # 1. the first set (the issuer fetches it as the pod starts)
        try:
            creds = fetch(endpoint, relative_uri, timeout)
            break
        except Unavailable as e:
            log.warning("no credentials yet: %s; asking again in %.0f s", e, wait)
            stop.wait(wait)
            wait = min(wait * 2, 30.0)
    else:
        return
    notes = mount_all(accesses, creds, root, endpoint, relative_uri, timeout, options)  # 2.
    write_manifest(manifest_path, manifest_with(data, creds, notes))  # 3.
    log.info("manifest written to %s (credentials until %s)", manifest_path, creds.expiration)
    try:
        while not stop.wait((next_check(now(), creds) - now()).total_seconds()):
            try:
                fresh = fetch(endpoint, relative_uri, timeout)
            except Unavailable as e:
                log.warning("credentials not renewed: %s (the current ones end %s)", e, creds.expiration)
                continue
            if fresh != creds:
                creds = fresh
                write_manifest(manifest_path, manifest_with(data, creds, notes))
                log.info("manifest rewritten (credentials until %s)", creds.expiration)
    finally:  # 4.
        for err in mounts.unmount_under(root):
            log.error("could not unmount: %s", err)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s posehub-storage %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(stop=stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
