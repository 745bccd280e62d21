"""Files the hub (root) writes into a user's home, never through a symbolic link the user planted.

A user controls their home: ``~/.posehub`` may be a link to ``/etc``. So every path is walked
one component at a time from a descriptor of the home, with ``O_NOFOLLOW | O_DIRECTORY``, and
each folder on the way must belong to the user; folders are made, and files renamed into
place, relative to the descriptor of their parent, and the user owns what is made. A link
met on the way is refused (:class:`HomeFileError`); a link at the final place is replaced
(a rename replaces the link itself, not its target).

``rel`` is a path relative to the home such as ``.posehub/storage.json``. When ``uid`` is
the hub's own (no isolation, one person, hub not root), ownership is left as it is.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path, PurePosixPath

_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


class HomeFileError(OSError):
    """A place in a user's home PoseHub will not write to. ``str(err)`` names it and says why."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _split(rel: str) -> tuple[list[str], str]:
    """``a/b/c`` -> (["a", "b"], "c"); anything but a plain relative path is refused."""
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts or any(p in (".", "..") for p in path.parts):
        raise HomeFileError(f"{rel!r} is not a path inside the home: PoseHub writes only below it.")
    return list(path.parts[:-1]), path.parts[-1]


def _own(fd: int, uid: int, gid: int, mode: int) -> None:
    if uid != os.geteuid():
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _not_a_folder(dir_fd: int, name: str, shown: str) -> HomeFileError:
    st = _lstat(dir_fd, name)
    if st is not None and stat.S_ISLNK(st.st_mode):
        return HomeFileError(f"{shown} is a symbolic link: PoseHub does not write through links in your home.")
    return HomeFileError(f"{shown} is not a folder: move it away so that PoseHub can create it.")


def _open_dir(home: Path, parts: list[str], *, uid: int, gid: int, mode: int, create: bool) -> int | None:
    """A descriptor of ``home/parts...``, walked without following links, every folder the user's.
    Missing folders are made (owned by the user, ``mode``), or None is returned when ``create`` is false."""
    try:
        fd = os.open(home, _DIR_FLAGS)
    except OSError as e:
        raise HomeFileError(f"The home {home} cannot be opened as a folder: {e.strerror}.") from None
    shown = "~"
    try:
        for name in [None] + parts:
            if name is not None:
                shown += "/" + name
                made = False
                if create and _lstat(fd, name) is None:
                    try:
                        os.mkdir(name, mode, dir_fd=fd)
                        made = True
                    except FileExistsError:
                        pass
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if create:
                        raise HomeFileError(f"{shown} vanished while PoseHub was making it: try again.") from None
                    return None
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _not_a_folder(fd, name, shown) from None
                    raise
                os.close(fd)
                fd = child
                if made:
                    _own(fd, uid, gid, mode)
            if os.fstat(fd).st_uid != uid:
                raise HomeFileError(f"{shown} does not belong to the user (uid {uid}): PoseHub does not write there.")
        return fd
    except BaseException:
        os.close(fd)
        raise


def make_dirs(home: Path, rel: str, *, uid: int, gid: int, mode: int = 0o700) -> Path:
    """The folder ``home/rel``, missing folders made owned by the user with ``mode``."""
    parents, name = _split(rel)
    os.close(_open_dir(Path(home), parents + [name], uid=uid, gid=gid, mode=mode, create=True))
    return Path(home) / rel


def write_file(home: Path, rel: str, data: bytes | str, *, uid: int, gid: int, mode: int = 0o600,
               only_if_missing: bool = False) -> Path:
    """Write ``home/rel`` atomically (temp file, then rename), owned by the user with ``mode``; missing
    folders are made 0700. A link at ``rel`` is replaced, not followed; ``only_if_missing`` leaves
    anything already there alone."""
    parents, name = _split(rel)
    shown = "~/" + rel
    if isinstance(data, str):
        data = data.encode("utf-8")
    dfd = _open_dir(Path(home), parents, uid=uid, gid=gid, mode=0o700, create=True)
    try:
        st = _lstat(dfd, name)
        if st is not None and only_if_missing:
            return Path(home) / rel
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise HomeFileError(f"{shown} is a folder: move it away so that PoseHub can write the file.")
        tmp = f".{name}.{secrets.token_hex(4)}.posehub-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                _own(fd, uid, gid, mode)
                f.write(data)
                f.flush()
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(dfd)
    return Path(home) / rel


def ensure_symlink(home: Path, rel: str, target: Path, *, uid: int, gid: int) -> Path:
    """``home/rel`` as a link to ``target``, owned by the user; an old link is replaced, a real file or
    folder there is left alone and reported with :class:`HomeFileError`."""
    parents, name = _split(rel)
    target = str(target)
    dfd = _open_dir(Path(home), parents, uid=uid, gid=gid, mode=0o700, create=True)
    try:
        st = _lstat(dfd, name)
        if st is not None and not stat.S_ISLNK(st.st_mode):
            kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
            raise HomeFileError(f"~/{rel} is a {kind}, not a link: PoseHub leaves it alone; "
                                f"move it away to get the link to {target}.")
        if st is not None and os.readlink(name, dir_fd=dfd) == target and (st.st_uid == uid or uid == os.geteuid()):
            return Path(home) / rel
        tmp = f".{name}.{secrets.token_hex(4)}.posehub-tmp"
        os.symlink(target, tmp, dir_fd=dfd)
        try:
            if uid != os.geteuid():
                os.chown(tmp, uid, gid, dir_fd=dfd, follow_symlinks=False)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            os.unlink(tmp, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)
    return Path(home) / rel


def remove_link(home: Path, rel: str, *, uid: int, gid: int | None = None) -> bool:
    """Remove ``home/rel`` if it is a symbolic link (True); anything else, or nothing, is left alone (False)."""
    parents, name = _split(rel)
    dfd = _open_dir(Path(home), parents, uid=uid, gid=-1 if gid is None else gid, mode=0o700, create=False)
    if dfd is None:
        return False
    try:
        st = _lstat(dfd, name)
        if st is None or not stat.S_ISLNK(st.st_mode):
            return False
        os.unlink(name, dir_fd=dfd)
        return True
    finally:
        os.close(dfd)
