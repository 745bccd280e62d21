"""Mount a user's buckets with s3fs-fuse, and unmount them again.

A bucket that cannot be mounted (endpoint down, no such bucket, credentials
refused) never stops the server: the mount is skipped and a note saying why
is left where the mount would be (``NOT-MOUNTED.txt``); the caller logs the
same line in the hub log. Unmounting also clears mounts left behind by a
crash (a dead s3fs leaves "Transport endpoint is not connected").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .s3creds import Credentials, CredentialsError
from .s3plan import S3FS_CREDENTIALS_ENV, BucketAccess, s3fs_command

NOTE_FILE = "NOT-MOUNTED.txt"
FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"


@dataclass(frozen=True)
class MountResult:
    access: BucketAccess
    path: Path
    mounted: bool
    reason: str = ""  # why it was not mounted


# ---------------------------------------------------------------- what is mounted


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def fuse_mounts(proc_mounts: str = "/proc/mounts") -> list[Path]:
    """Mount points of every s3fs (fuse.s3fs) mount on the machine."""
    out = []
    try:
        lines = Path(proc_mounts).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "fuse.s3fs":
            out.append(Path(_unescape(parts[1])))
    return out


def mounts_under(folder: Path) -> list[Path]:
    folder = Path(os.path.abspath(folder))
    return [p for p in fuse_mounts() if p == folder or folder in p.parents]


def is_mounted(path: Path) -> bool:
    return Path(os.path.abspath(path)) in fuse_mounts()


def unmount(path: Path) -> str:
    """Unmount one s3fs mount; a busy or dead one is detached lazily. Returns '' or the error."""
    if not is_mounted(path):
        return ""
    for args in ([FUSERMOUNT, "-u", str(path)], [FUSERMOUNT, "-uz", str(path)], ["umount", "-l", str(path)]):
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            err = str(e)
            continue
        err = r.stderr.strip()
        if not is_mounted(path):
            return ""
    return err or f"{path} is still mounted"


def unmount_under(folder: Path) -> list[str]:
    """Unmount every s3fs mount inside ``folder`` (deepest first); returns the errors."""
    errors = []
    for p in sorted(mounts_under(folder), key=lambda p: len(p.parts), reverse=True):
        err = unmount(p)
        if err:
            errors.append(f"{p}: {err}")
    return errors


# ---------------------------------------------------------------- notes


def note_text(access: BucketAccess, reason: str) -> str:
    return (f"{access.url} is not mounted here.\n\n"
            f"Why: {reason}\n\n"
            "Your server started without it. Ask the lab's PoseHub admin to check the bucket's\n"
            "configuration, then restart your server (File > Hub Control Panel > Stop My Server).\n")


def write_note(path: Path, access: BucketAccess, reason: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / NOTE_FILE).write_text(note_text(access, reason))


def clear_note(path: Path) -> None:
    try:
        (path / NOTE_FILE).unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass


# ---------------------------------------------------------------- checks and mounts


def preflight(access: BucketAccess, creds: Credentials, timeout: float) -> str:
    """Ask the endpoint for the bucket (one list call, short timeouts): '' or why it cannot be mounted."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    endpoint = access.endpoint_url or None
    where = access.endpoint_url or f"AWS ({access.region})"
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=access.region, aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key, aws_session_token=creds.session_token or None,
        config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1},
                      s3={"addressing_style": "path"} if endpoint else None),
    )
    try:
        client.list_objects_v2(Bucket=access.bucket, Prefix=access.prefix, MaxKeys=1)
    except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError) as e:
        return f"the S3 endpoint {where} did not answer ({type(e).__name__})"
    except ClientError as e:
        err = e.response.get("Error", {})
        code = err.get("Code", "")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket" or status == 404:
            return f"the bucket '{access.bucket}' does not exist at {where}"
        if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                            "InvalidToken", "ExpiredToken"):
            return f"the credentials for bucket '{access.bucket}' were refused by {where} ({code or status})"
        return f"{where} answered {status} {code}: {err.get('Message', '')}".strip()
    except Exception as e:  # noqa: BLE001 - any other failure is a reason to skip the mount
        return f"the S3 endpoint {where} could not be used ({type(e).__name__}: {e})"
    return ""


def _listable(path: Path, timeout: float) -> bool:
    """Whether the mounted folder answers a listing within ``timeout`` (a hung FUSE call must not
    hang the hub: the listing runs in a daemon thread)."""
    ok: list[bool] = []

    def go():
        try:
            os.listdir(path)
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    return ok == [True]


def mount(access: BucketAccess, creds: Credentials | CredentialsError, root: Path, *, timeout: float = 10,
          extra: list[str] = (), owner: tuple[int, int] | None = None,
          refresh: tuple[str, str] | None = None) -> MountResult:
    """Mount one bucket at ``root/<access.mountpoint>``, or leave a note there saying why not. ``root`` is the
    hub's folder of this user's mounts (never inside the user's home, where a planted link could send a
    mount elsewhere); with ``owner`` (uid, gid) the mount is that account's alone. With ``refresh``
    (the hub's credential endpoint, this server's relative URI) s3fs asks the hub for renewed credentials
    before ``creds`` end (:mod:`posehub.hub.s3broker`); otherwise it keeps ``creds``."""
    path = root / access.mountpoint
    if is_mounted(path):  # left behind by a crash
        unmount(path)
    path.mkdir(parents=True, exist_ok=True)
    clear_note(path)

    def skipped(reason: str) -> MountResult:
        write_note(path, access, reason)
        return MountResult(access, path, False, reason)

    if isinstance(creds, CredentialsError):
        return skipped(str(creds))
    if shutil.which("s3fs") is None:
        return skipped("s3fs is not installed on this machine (Debian package 's3fs'; `make setup` installs it)")
    reason = preflight(access, creds, timeout)
    if reason:
        return skipped(reason)
    endpoint, relative_uri = refresh or ("", "")
    cmd = s3fs_command(access, path, timeout=timeout, extra=extra, session_token=bool(creds.session_token),
                       owner=owner, credentials_endpoint=endpoint)
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/root")}
    env.update({S3FS_CREDENTIALS_ENV: relative_uri} if endpoint else creds.as_env())
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout * 3)
    except subprocess.TimeoutExpired:
        unmount(path)
        return skipped(f"s3fs did not finish mounting within {timeout * 3:.0f} s")
    if r.returncode != 0:
        return skipped(f"s3fs failed: {(r.stderr or r.stdout).strip()[-500:]}")
    if not is_mounted(path) or not _listable(path, timeout):
        unmount(path)
        return skipped("s3fs started but the mount did not answer")
    return MountResult(access, path, True)
