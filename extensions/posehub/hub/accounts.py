"""One system account per hub user, in the manner of The Littlest JupyterHub: a pure name
mapping and small idempotent functions around ``useradd``/``groupadd`` (no spawner code,
no running hub needed).

Account names (:func:`system_name`). The hub name is lower-cased, then:

* when it matches ``^[a-z][a-z0-9_-]*$``, ``prefix + name`` fits in 32 characters and the
  name does not end in ``-`` plus 6 hex digits, the account is ``prefix + name``
  (``alice`` -> ``posehub-alice``);
* otherwise it is ``prefix + stem + "-" + hash``: the stem is the name with every character
  outside ``[a-z0-9_-]`` replaced by ``-`` (runs collapsed, ends stripped), cut so that the
  whole fits 32 characters; the hash is the first 6 hex digits of the sha256 of the
  lower-cased hub name in UTF-8 (``alice.smith`` -> ``posehub-alice-smith-3f2a9c``).

Plain names never end in ``-`` + 6 hex digits and hashed names always do, so two different
hub names get the same account only through a collision of the hash. Refused
(:class:`AccountError`): an empty name, one without any letter or digit (``*``, ``..``),
one with control characters or ``/``, and a prefix not matching ``^[a-z_][a-z0-9_-]{0,15}$``.

Accounts carry the comment ``PoseHub user <hub name>``: an existing account made for a
different hub user, or not made by PoseHub, is never handed out. Accounts and homes are
never deleted: removing a hub user keeps their files.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import subprocess
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

MAX_LENGTH = 32  # Linux user names
HASH_LENGTH = 6
GECOS_PREFIX = "PoseHub user "

_PLAIN = re.compile(r"^[a-z][a-z0-9_-]*$")
_PREFIX = re.compile(r"^[a-z_][a-z0-9_-]{0,15}$")
_HASHED_TAIL = re.compile(r"-[0-9a-f]{%d}$" % HASH_LENGTH)
_lock = threading.Lock()  # useradd/groupadd, one at a time in this process


class AccountError(ValueError):
    """A hub user cannot get a system account. ``str(err)`` says what is wrong and what to do."""


@dataclass(frozen=True)
class Account:
    hub_name: str
    name: str
    uid: int
    gid: int
    home: Path
    groups: tuple[int, ...]  # supplementary gids


def system_name(hub_name: str, prefix: str = "posehub-") -> str:
    """The system account name of a hub user (rules in the module docstring). Pure and stable."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise AccountError(f"The account prefix {prefix!r} is not usable: it must start with a lower-case letter "
                           "or '_' and have at most 16 characters among a-z, 0-9, '_' and '-'. Fix the hub config.")
    name = (hub_name if isinstance(hub_name, str) else "").lower()
    if not name:
        raise AccountError("An empty user name cannot get a system account: sign in with a named account.")
    if "/" in name or any(unicodedata.category(c) == "Cc" for c in name):
        raise AccountError(f"The user name {hub_name!r} contains '/' or control characters, so it cannot get a "
                           "system account: ask the hub admin to rename the user.")
    if not any(c.isalnum() for c in name):
        raise AccountError(f"The user name {hub_name!r} has no letter or digit, so it cannot get a system "
                           "account: ask the hub admin to rename the user.")
    if _PLAIN.match(name) and len(prefix + name) <= MAX_LENGTH and not _HASHED_TAIL.search(name):
        return prefix + name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_LENGTH]
    stem = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-")
    stem = stem[: MAX_LENGTH - len(prefix) - 1 - HASH_LENGTH]
    return f"{prefix}{stem}-{digest}"


def home_of(hub_name: str, *, prefix: str, homes_dir: Path) -> Path:
    return Path(homes_dir) / system_name(hub_name, prefix)


def _gecos(hub_name: str) -> str:
    """The account comment; ':' separates passwd fields, so it (and '%') is escaped."""
    return GECOS_PREFIX + hub_name.lower().replace("%", "%25").replace(":", "%3A")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run useradd/groupadd/usermod under the lock, retrying while another process holds /etc/passwd."""
    for attempt in range(6):
        with _lock:
            r = subprocess.run(cmd, capture_output=True, text=True)
        busy = r.returncode == 10 or "cannot lock" in r.stderr
        if r.returncode == 0 or not busy or attempt == 5:
            return r
        time.sleep(0.2 * (attempt + 1))
    return r


def ensure_group(name: str) -> int:
    """The gid of group ``name``, made with ``groupadd`` when missing (idempotent)."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    r = _run(["groupadd", name])
    try:  # exit status 9: another process made it meanwhile
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise AccountError(f"Could not create the group {name!r}: {r.stderr.strip() or r.returncode}.") from None


def _account(hub_name: str, pw: pwd.struct_passwd, home: Path) -> Account:
    """The Account of an existing passwd entry, after checking that it is this hub user's."""
    if pw.pw_gecos != _gecos(hub_name):
        if pw.pw_gecos.startswith(GECOS_PREFIX):
            raise AccountError(f"The system account {pw.pw_name!r} belongs to another hub user "
                               f"({pw.pw_gecos[len(GECOS_PREFIX):]!r}), so {hub_name!r} cannot use it: "
                               "ask the hub admin to rename one of the users.")
        raise AccountError(f"A system account {pw.pw_name!r} exists that PoseHub did not create, so {hub_name!r} "
                           "cannot use it: ask the hub admin to rename it or choose another account prefix.")
    groups = tuple(sorted(g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != pw.pw_gid))
    return Account(hub_name, pw.pw_name, pw.pw_uid, pw.pw_gid, home, groups)


def lookup(hub_name: str, *, prefix: str, homes_dir: Path) -> Account | None:
    """The hub user's account, None when there is none yet; AccountError when the name is taken by another."""
    home = home_of(hub_name, prefix=prefix, homes_dir=homes_dir)
    try:
        pw = pwd.getpwnam(home.name)
    except KeyError:
        return None
    return _account(hub_name, pw, home)


def ensure_account(hub_name: str, *, prefix: str, group: str, homes_dir: Path) -> Account:
    """The hub user's account, member of ``group``, with a home ``homes_dir/<name>`` (0700, theirs),
    each made when missing. Idempotent; needs root."""
    home = home_of(hub_name, prefix=prefix, homes_dir=homes_dir)
    name = home.name
    missing = lookup(hub_name, prefix=prefix, homes_dir=homes_dir) is None  # refusals before any change
    group_gid = ensure_group(group)
    why = "it vanished while being set up"
    if missing:  # exit status 9 may mean the name was taken meanwhile: lookup checks by whom
        r = _run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                  "--comment", _gecos(hub_name), "--user-group", "--groups", group, name])
        why = r.stderr.strip().rstrip(".") or f"useradd exited with {r.returncode}"
    account = lookup(hub_name, prefix=prefix, homes_dir=homes_dir)
    if account is None:
        raise AccountError(f"Could not create the system account {name!r} for {hub_name!r}: {why}.")
    if group_gid not in account.groups:
        r = _run(["usermod", "--append", "--groups", group, name])
        if r.returncode != 0:
            raise AccountError(f"Could not add {name!r} to the group {group!r}: {r.stderr.strip()}.")
        account = lookup(hub_name, prefix=prefix, homes_dir=homes_dir)
    _ensure_home(account)
    return account


def _ensure_home(account: Account) -> None:
    """homes_dir root-owned 0755 when missing; the home the account's, 0700 (top folder only)."""
    parent = account.home.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o755, exist_ok=True)
        os.chown(parent, 0, 0)
        os.chmod(parent, 0o755)
    try:
        os.mkdir(account.home, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(account.home, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
    except OSError as e:
        raise AccountError(f"The home {account.home} of {account.hub_name!r} is not a folder "
                           f"({e.strerror}): move it away and try again.") from None
    try:
        os.fchown(fd, account.uid, account.gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
