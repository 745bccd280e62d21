"""The user's buckets from Python: in notebooks, the ensemble trainer and Dask workers.

The hub tells each server what it may reach in ``~/.posehub/storage.json``
(path in ``$POSEHUB_STORAGE``): every visible bucket, the user's home prefix,
the endpoint and the server's own short-lived credentials from STS (never the
hub's keys, nor a bucket's static keys). The hub renews those credentials
before they end and rewrites the manifest; filesystems from here (and from
their options, pickled to Dask workers) read it again when theirs near their
end, so long runs keep their access. ::

    from posehub import storage
    fs = storage.filesystem()                 # s3fs.S3FileSystem for the home bucket
    fs.ls(storage.url())                      # s3://posehub-home/alice/
    with storage.open("openfield-demo", "labels.csv") as f: ...
    dd.read_csv(storage.url("home", "*.csv"), storage_options=storage.storage_options())

With ``buckets.backend: local`` the same calls give local folders, and so do
buckets with static keys (the keys stay with the hub: Python reads them through
their mount). Writes to a read-only S3 bucket raise :class:`PermissionError`
before anything is sent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

MANIFEST_ENV = "POSEHUB_STORAGE"
DEFAULT_MANIFEST = Path("~/.posehub/storage.json")
# Video is read in long sequential runs and seeks between frames: files are read as one stream
# from the current position, with 8 MiB of read-ahead for small reads (bench/s3_read.py measures
# this against boto3).
BLOCK_SIZE = 8 * 2**20
CACHE_TYPE = "readahead"
MAX_POOL_CONNECTIONS = 32


class StorageError(Exception):
    """Storage that is not configured or not reachable; the message says what to do."""


@dataclass(frozen=True)
class Bucket:
    name: str  # "home" or the shared bucket's name
    kind: str
    bucket: str
    prefix: str
    url: str  # s3://bucket/prefix, or a local folder
    path: str  # where it is mounted in the workspace
    mounted: bool
    note: str
    read_only: bool
    endpoint_url: str
    region: str
    credentials: dict | None

    @property
    def local(self) -> bool:
        """A local folder: ``backend: local``, or a bucket whose static keys stay with the hub, which
        Python reaches through its mount."""
        return not self.url.startswith("s3://") or not self.credentials

    @property
    def root(self) -> str:
        """Where the bucket's data is for Python: its s3:// URL, or a local folder."""
        if not self.url.startswith("s3://"):
            return self.url
        if not self.credentials:
            if not self.mounted:
                raise StorageError(f"bucket '{self.name}' is reached through its mount (its keys stay with the hub), "
                                   f"and it is not mounted: {self.note}")
            return self.path
        return self.url


def manifest_path() -> Path:
    return Path(os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST).expanduser()


def buckets() -> dict[str, Bucket]:
    """Every bucket of this workspace, by name ("home" for the home prefix)."""
    return _read_buckets(manifest_path())


def _read_buckets(p: Path) -> dict[str, Bucket]:
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise StorageError(f"no storage manifest at {p}: this is not a PoseHub workspace, "
                           f"or the server was started before storage was configured (restart it)") from None
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read the storage manifest {p}: {e}") from None
    fields = Bucket.__dataclass_fields__
    return {b["name"]: Bucket(**{k: b.get(k) for k in fields}) for b in data.get("buckets", [])}


def bucket(name: str = "home") -> Bucket:
    all_ = buckets()
    if name not in all_:
        raise StorageError(f"no bucket '{name}' in this workspace (you have: {', '.join(sorted(all_)) or 'none'})")
    return all_[name]


def url(name: str = "home", path: str = "") -> str:
    """``s3://<bucket>/<prefix><path>`` (or the local folder) of a path inside one of the user's buckets."""
    b = bucket(name)
    path = path.lstrip("/")
    if b.local:
        return str(Path(b.root) / path) if path else b.root
    return b.url + path


def _read_only_buckets() -> set[str]:
    return {b.bucket for b in buckets().values() if b.read_only and not b.local}


def _check_not_expired(b: Bucket, creds: dict, now: datetime | None = None) -> None:
    """Short-lived (STS) credentials end at ``expiration``: say so instead of a bare AccessDenied."""
    if not creds.get("expiration"):
        return
    ends = datetime.fromisoformat(creds["expiration"].replace("Z", "+00:00"))
    now = now or datetime.now(timezone.utc)
    if ends <= now:
        raise StorageError(f"the credentials for bucket '{b.name}' expired at {ends:%Y-%m-%d %H:%M:%S} UTC, and "
                           "the hub, which renews them while your server runs, has not: restart your server "
                           "(File > Hub Control Panel) and tell the lab's PoseHub admin if it happens again")


def _credential_metadata(manifest: str, name: str) -> dict:
    """The bucket's current credentials from the manifest, in botocore's refresh format."""
    b = _read_buckets(Path(manifest)).get(name)
    creds = (b.credentials if b else None) or {}
    if not creds.get("access_key_id"):
        raise StorageError(f"no credentials for bucket '{name}' in {manifest}")
    _check_not_expired(b, creds)
    return {"access_key": creds["access_key_id"], "secret_key": creds["secret_access_key"],
            "token": creds.get("session_token") or None, "expiry_time": creds.get("expiration") or None}


def manifest_session(manifest: str, name: str):
    """An aiobotocore session whose credentials are the bucket ``name``'s in ``manifest``, read again as they
    near their end (the hub renews them). It pickles as its two arguments, so a Dask worker running as
    the same account rebuilds it and reads the same manifest."""
    return __getattr__("ManifestSession")(manifest, name)


def storage_options(name: str = "home") -> dict:
    """Keyword arguments of :class:`s3fs.S3FileSystem` for ``name``: give them to Dask or pandas
    (``storage_options=``); empty for local folders."""
    b = bucket(name)
    if b.local:
        return {}
    _check_not_expired(b, b.credentials or {})
    opts = {
        "session": manifest_session(os.path.abspath(manifest_path()), name),
        "endpoint_url": b.endpoint_url or None,
        "client_kwargs": {"region_name": b.region},
        "config_kwargs": {"max_pool_connections": MAX_POOL_CONNECTIONS,
                          **({"s3": {"addressing_style": "path"}} if b.endpoint_url else {})},
        "default_block_size": BLOCK_SIZE,
        "default_cache_type": CACHE_TYPE,
        # the mount and other servers write the same buckets: never answer from a stale listing
        "use_listings_cache": False,
    }
    return opts


def filesystem(name: str = "home"):
    """An :class:`s3fs.S3FileSystem` (a :class:`PoseHubS3FileSystem`) for the bucket ``name``,
    or fsspec's local filesystem when buckets are local folders."""
    b = bucket(name)
    if b.local:
        b.root  # noqa: B018 - raises when an unmounted bucket cannot be reached
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem()
    cls = __getattr__("PoseHubS3FileSystem")
    return cls(read_only_buckets=sorted(_read_only_buckets()), **storage_options(name))


def open(name: str, path: str, mode: str = "rb", **kwargs):  # noqa: A001 - mirrors fsspec.open
    """Open a file in one of the user's buckets: ``storage.open("home", "runs/a.csv", "w")``."""
    return filesystem(name).open(url(name, path), mode, **kwargs)


def _make_class():
    import s3fs
    import s3fs.errors
    from fsspec.caching import ReadAheadCache

    class StreamCache(ReadAheadCache):
        """Read-ahead for small reads; a read of a block or more, outside what is cached, goes
        straight to the stream, with no copy through the cache."""

        name = "posehub-stream"

        def _fetch(self, start, end):
            if (start is not None and end is not None and end - start >= self.blocksize
                    and not self.start <= start < self.end):
                self.total_requested_bytes += end - start
                self.miss_count += 1
                return self.fetcher(start, min(end, self.size))
            return super()._fetch(start, end)

    class StreamingS3File(s3fs.core.S3File):
        """Reads as one streaming GET from the current position to the end of the object, instead of
        one GET per block: sequential reads (a video decoded frame by frame, a file copied) cost one
        request, like boto3's ``get_object().read()``. A seek elsewhere starts a new stream there.
        The read-ahead cache above still serves small reads and short seeks back."""

        _stream = None
        _stream_pos = -1

        def _open_stream(self, start):
            kw = {k: v for k, v in self.read_kw.items() if v is not None}
            if self.version_id:
                kw["VersionId"] = self.version_id
            if self.details.get("ETag"):
                kw["IfMatch"] = self.details["ETag"]  # the same object throughout, or an error
            if start > 0:  # from the start: a plain GET, as some servers copy the object for a range
                kw["Range"] = f"bytes={start}-"
            try:
                resp = self.fs.stream_client().get_object(Bucket=self.bucket, Key=self.key, **kw)
            except Exception as e:  # noqa: BLE001 - the same errors as s3fs's own reads
                raise s3fs.errors.translate_boto_error(e) from e
            self._stream, self._stream_pos = resp["Body"], start

        def _close_stream(self):
            if self._stream is not None:
                self._stream.close()
            self._stream, self._stream_pos = None, -1

        def _fetch_range(self, start, end):
            end = min(end, self.size)
            if end <= start:
                return b""
            if self._stream is None or self._stream_pos != start:
                self._close_stream()
                self._open_stream(start)
            out = self._stream.read(end - start)
            self._stream_pos += len(out)
            if len(out) < end - start:  # the stream ended early: the next read opens a new one
                self._close_stream()
            return out

        def close(self):
            self._close_stream()
            super().close()

    class PoseHubS3FileSystem(s3fs.S3FileSystem):
        """s3fs with PoseHub's read-only buckets enforced on the client: a write raises
        PermissionError and nothing is sent."""

        def __init__(self, *args, read_only_buckets=(), **kwargs):
            super().__init__(*args, **kwargs)
            self.read_only_buckets = frozenset(read_only_buckets)
            self._stream_client = None

        def stream_client(self):
            """A botocore (urllib3) client for the streaming reads of :class:`StreamingS3File`: it
            reads long bodies several times faster than the aiohttp transport (bench/s3_read.py)."""
            if self._stream_client is None:
                import boto3
                from botocore.config import Config

                o = self.storage_options
                s3cfg = (o.get("config_kwargs") or {}).get("s3")
                session = o.get("session")
                renewed = getattr(session, "botocore_credentials", None)  # a manifest_session
                self._stream_client = boto3.session.Session(
                    botocore_session=renewed() if renewed else None).client(
                    "s3", endpoint_url=o.get("endpoint_url"), aws_access_key_id=o.get("key"),
                    aws_secret_access_key=o.get("secret"), aws_session_token=o.get("token"),
                    region_name=(o.get("client_kwargs") or {}).get("region_name"),
                    config=Config(max_pool_connections=MAX_POOL_CONNECTIONS, s3=s3cfg,
                                  retries={"max_attempts": 5, "mode": "standard"}))
            return self._stream_client

        def _guard(self, *paths):
            for p in paths:
                for one in p if isinstance(p, (list, tuple)) else [p]:
                    b = self.split_path(str(one))[0]
                    if b in self.read_only_buckets:
                        raise PermissionError(f"bucket '{b}' is read-only in PoseHub: {one}")

        def _open(self, path, mode="rb", *args, **kwargs):
            if any(c in mode for c in "wax+"):
                self._guard(path)
                return super()._open(path, mode, *args, **kwargs)
            f = super()._open(path, mode, *args, **kwargs)
            f.__class__ = StreamingS3File  # same object, streaming reads (it adds no state of its own)
            if f.cache.name == "readahead":
                f.cache = StreamCache(f.blocksize, f._fetch_range, f.size)
            else:
                f.cache.fetcher = f._fetch_range  # the cache was handed the method before the swap
            return f

        async def _pipe(self, path, value=None, *args, **kwargs):
            self._guard(list(path) if isinstance(path, dict) else path)
            return await super()._pipe(path, value, *args, **kwargs)

        async def _put(self, lpath, rpath, *args, **kwargs):
            self._guard(rpath)
            return await super()._put(lpath, rpath, *args, **kwargs)

        async def _copy(self, path1, path2, *args, **kwargs):
            self._guard(path2)
            return await super()._copy(path1, path2, *args, **kwargs)

        async def _makedirs(self, path, *args, **kwargs):
            self._guard(path)
            return await super()._makedirs(path, *args, **kwargs)

        async def _pipe_file(self, path, *args, **kwargs):
            self._guard(path)
            return await super()._pipe_file(path, *args, **kwargs)

        async def _put_file(self, lpath, rpath, *args, **kwargs):
            self._guard(rpath)
            return await super()._put_file(lpath, rpath, *args, **kwargs)

        async def _cp_file(self, path1, path2, *args, **kwargs):
            self._guard(path2)
            return await super()._cp_file(path1, path2, *args, **kwargs)

        async def _rm(self, path, *args, **kwargs):
            self._guard(path)
            return await super()._rm(path, *args, **kwargs)

        async def _rm_file(self, path, *args, **kwargs):
            self._guard(path)
            return await super()._rm_file(path, *args, **kwargs)

        async def _mkdir(self, path, *args, **kwargs):
            self._guard(path)
            return await super()._mkdir(path, *args, **kwargs)

        def mkdir(self, path, *args, **kwargs):
            self._guard(path)
            return super().mkdir(path, *args, **kwargs)

        def makedirs(self, path, *args, **kwargs):
            self._guard(path)
            return super().makedirs(path, *args, **kwargs)

        def rmdir(self, path, *args, **kwargs):
            self._guard(path)
            return super().rmdir(path, *args, **kwargs)

        def touch(self, path, *args, **kwargs):
            self._guard(path)
            return super().touch(path, *args, **kwargs)

    return PoseHubS3FileSystem


def _make_session_class():
    import botocore.session
    from aiobotocore.credentials import AioCredentials, AioRefreshableCredentials
    from aiobotocore.session import AioSession
    from botocore.credentials import Credentials, RefreshableCredentials

    def credentials(read, refreshable, fixed):
        meta = read()
        if meta["expiry_time"] is None:  # credentials that do not end
            return fixed(meta["access_key"], meta["secret_key"], meta["token"], method="posehub-manifest")
        return refreshable.create_from_metadata(meta, refresh_using=read, method="posehub-manifest")

    class ManifestSession(AioSession):
        def __init__(self, manifest: str, name: str):
            super().__init__()
            self.manifest, self.bucket_name = manifest, name
            self._credentials = credentials(self._read, AioRefreshableCredentials, AioCredentials)

        def _read(self) -> dict:
            return _credential_metadata(self.manifest, self.bucket_name)

        def botocore_credentials(self):
            """A botocore session with the same renewed credentials (for boto3 clients)."""
            s = botocore.session.get_session()
            s._credentials = credentials(self._read, RefreshableCredentials, Credentials)
            return s

        def __reduce__(self):
            return manifest_session, (self.manifest, self.bucket_name)

        def __repr__(self):  # fsspec caches filesystems by the repr of their options
            return f"posehub.storage.manifest_session({self.manifest!r}, {self.bucket_name!r})"

    return ManifestSession


def __getattr__(attr):  # s3fs and aiobotocore are imported only when a filesystem is asked for
    makers = {"PoseHubS3FileSystem": _make_class, "ManifestSession": _make_session_class}
    if attr in makers:
        if attr not in _classes:
            _classes[attr] = makers[attr]()
        return _classes[attr]
    raise AttributeError(attr)


_classes: dict = {}
