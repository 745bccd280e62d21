"""System accounts per hub user (posehub.hub.accounts) and root-written home files (posehub.hub.homefiles).

The name mapping and home-file tests run anywhere; tests that create real accounts need root and
use a prefix unique to this session, whose accounts and groups are deleted at the end."""

import grp
import os
import pwd
import random
import stat
import string
import subprocess
import threading
from pathlib import Path

import pytest

from posehub.hub import accounts, homefiles
from posehub.hub.accounts import AccountError, system_name
from posehub.hub.homefiles import HomeFileError

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="creating system accounts (useradd/groupadd) needs root")


# ----- the name mapping (pure) -----

@pytest.mark.parametrize("hub, expected", [
    ("alice", "posehub-alice"),
    ("Alice", "posehub-alice"),
    ("bob_2", "posehub-bob_2"),
    ("x-y", "posehub-x-y"),
])
def test_plain_names(hub, expected):
    assert system_name(hub) == expected


def test_hashed_names():
    import hashlib
    h = hashlib.sha256("alice.smith".encode()).hexdigest()[:6]
    assert system_name("alice.smith") == f"posehub-alice-smith-{h}"
    assert system_name("Alice.Smith") == system_name("alice.smith")
    assert system_name("  x  y  ").startswith("posehub-x-y-")
    assert system_name("1abc").startswith("posehub-1abc-")  # must start with a letter to be plain
    assert system_name("älice").startswith("posehub-lice-")
    long = system_name("a" * 60)
    assert len(long) == accounts.MAX_LENGTH and long.startswith("posehub-aaaa")
    assert len(system_name("b" * 24)) == 32 and system_name("b" * 24) == "posehub-" + "b" * 24  # fits exactly
    assert system_name("b" * 25) != "posehub-" + "b" * 25
    # a plain-looking name that ends like a hashed one is hashed too, so it cannot take another's account
    assert system_name(f"alice-smith-{h}") != system_name("alice.smith")
    assert system_name("x", prefix="ph") == "phx"
    for name in ["alice", "a.b", "a" * 60, "älice", "x y"]:
        assert system_name(name) == system_name(name)  # stable
        assert len(system_name(name)) <= 32


@pytest.mark.parametrize("hub", ["", "*", "..", "?", "---", "a/b", "a\nb", "tab\there", "nul\x00"])
def test_refused_names(hub):
    with pytest.raises(AccountError) as e:
        system_name(hub)
    assert str(e.value).endswith(".") and len(str(e.value)) > 30


@pytest.mark.parametrize("prefix", ["", "Posehub-", "1ph-", "-ph", "ph.", "p" * 17, "ph/"])
def test_refused_prefixes(prefix):
    with pytest.raises(AccountError, match="prefix"):
        system_name("alice", prefix=prefix)


def test_injective_over_a_corpus():
    corpus = {"alice", "alice.smith", "alice_smith", "alice-smith", "alice smith", "alice..smith", "älice",
              "alice@lab.org", "alice+1@lab.org", "a" * 60, "a" * 61, "a" * 24, "a" * 25, "x y", "x  y", "x_y", "x-y",
              "1", "2", "1a", "ä", "ö", "é", "日本", "中文", "a:b", "a%b", "a,b", "-a", "a-", "_a", "a_"}
    corpus |= {f"user{i}" for i in range(500)} | {f"user.{i}" for i in range(500)} | {f"u{i}@x" for i in range(500)}
    corpus |= {system_name(n)[len("posehub-"):] for n in list(corpus)}  # names that look like hashed ones
    names = {n.lower() for n in corpus}
    mapped = {system_name(n) for n in names}
    assert len(mapped) == len(names)
    assert all(len(m) <= 32 and m.startswith("posehub-") for m in mapped)


# ----- real accounts (root) -----

@pytest.fixture(scope="session")
def prefix():
    """A prefix unique to this session; its accounts and groups are deleted at the end."""
    p = "pht" + "".join(random.choices(string.ascii_lowercase, k=4)) + "-"
    yield p
    if not ROOT:
        return
    for pw in pwd.getpwall():
        if pw.pw_name.startswith(p):
            subprocess.run(["userdel", pw.pw_name], capture_output=True)
    for g in grp.getgrall():
        if g.gr_name.startswith(p):
            subprocess.run(["groupdel", g.gr_name], capture_output=True)


@pytest.fixture
def group(prefix):
    return prefix + "users"


@needs_root
def test_ensure_account(prefix, group, tmp_path):
    homes = tmp_path / "homes"
    assert accounts.lookup("carol", prefix=prefix, homes_dir=homes) is None
    acc = accounts.ensure_account("carol", prefix=prefix, group=group, homes_dir=homes)
    pw = pwd.getpwnam(prefix + "carol")
    assert (acc.name, acc.uid, acc.gid) == (prefix + "carol", pw.pw_uid, pw.pw_gid)
    assert acc.home == homes / (prefix + "carol")
    assert pw.pw_gecos == "PoseHub user carol" and pw.pw_shell == "/bin/bash" and pw.pw_dir == str(acc.home)
    assert grp.getgrgid(acc.gid).gr_name == prefix + "carol"  # its own primary group
    assert grp.getgrnam(group).gr_gid in acc.groups and prefix + "carol" in grp.getgrnam(group).gr_mem
    st = os.stat(homes)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    st = os.stat(acc.home)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (acc.uid, acc.gid, 0o700)

    # idempotent, and repairs the home's owner and mode
    os.chown(acc.home, 0, 0)
    os.chmod(acc.home, 0o755)
    again = accounts.ensure_account("Carol", prefix=prefix, group=group, homes_dir=homes)
    assert again.uid == acc.uid and again.gid == acc.gid and again.name == acc.name
    st = os.stat(acc.home)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (acc.uid, 0o700)
    assert accounts.lookup("carol", prefix=prefix, homes_dir=homes) == acc
    assert accounts.home_of("carol", prefix=prefix, homes_dir=homes) == acc.home


@needs_root
def test_hashed_name_and_odd_characters(prefix, group, tmp_path):
    acc = accounts.ensure_account("dave:o'neil@lab.org", prefix=prefix, group=group, homes_dir=tmp_path)
    assert acc.name == system_name("dave:o'neil@lab.org", prefix)
    assert accounts.lookup("dave:o'neil@lab.org", prefix=prefix, homes_dir=tmp_path).uid == acc.uid
    for odd in ["日本", "alice-"]:  # an empty stem ("<prefix>-<hash>"), a trailing '-'
        acc = accounts.ensure_account(odd, prefix=prefix, group=group, homes_dir=tmp_path)
        assert pwd.getpwnam(acc.name).pw_gecos == f"PoseHub user {odd}"


def test_busy_passwd_lock_is_retried(monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        rc, err = [(10, "useradd: cannot lock /etc/passwd; try again later.\n"), (10, ""), (0, "")][len(calls) - 1]
        return subprocess.CompletedProcess(cmd, rc, "", err)

    monkeypatch.setattr(accounts.subprocess, "run", fake_run)
    monkeypatch.setattr(accounts.time, "sleep", lambda s: None)
    assert accounts._run(["useradd", "x"]).returncode == 0 and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(accounts.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or
                        subprocess.CompletedProcess(cmd, 4, "", "useradd: UID 5 is not unique"))
    assert accounts._run(["useradd", "x"]).returncode == 4 and len(calls) == 1  # other failures: no retry


@needs_root
def test_twenty_at_once(prefix, group, tmp_path):
    names = [f"t{i}.user" for i in range(20)]
    results, errors = {}, []

    def make(n):
        try:
            results[n] = accounts.ensure_account(n, prefix=prefix, group=group, homes_dir=tmp_path)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=make, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({a.uid for a in results.values()}) == 20
    for a in results.values():
        assert pwd.getpwnam(a.name).pw_uid == a.uid and os.stat(a.home).st_uid == a.uid


@needs_root
def test_account_of_another_hub_user_is_refused(prefix, tmp_path):
    name, group = system_name("erin", prefix), prefix + "erins"
    subprocess.run(["useradd", "--no-create-home", "--comment", "PoseHub user mallory", name], check=True)
    before = pwd.getpwnam(name)
    with pytest.raises(AccountError, match="another hub user"):
        accounts.ensure_account("erin", prefix=prefix, group=group, homes_dir=tmp_path / "h")
    with pytest.raises(AccountError, match="another hub user"):
        accounts.lookup("erin", prefix=prefix, homes_dir=tmp_path / "h")
    assert pwd.getpwnam(name) == before and os.getgrouplist(name, before.pw_gid) == [before.pw_gid]
    assert not (tmp_path / "h").exists() and not _group_exists(group)


@needs_root
def test_account_not_made_by_posehub_is_refused(prefix, group, tmp_path):
    name = system_name("frank", prefix)
    subprocess.run(["useradd", "--no-create-home", "--comment", "Frank the admin", name], check=True)
    with pytest.raises(AccountError, match="PoseHub did not create"):
        accounts.ensure_account("frank", prefix=prefix, group=group, homes_dir=tmp_path)


@needs_root
def test_useradd_failure_is_reported(prefix, group, tmp_path):
    subprocess.run(["groupadd", system_name("gina", prefix)], check=True)  # --user-group cannot make its group
    with pytest.raises(AccountError, match=r"Could not create the system account .*group .* exists"):
        accounts.ensure_account("gina", prefix=prefix, group=group, homes_dir=tmp_path)


@needs_root
def test_refused_name_creates_nothing(prefix, tmp_path):
    g = prefix + "never"
    with pytest.raises(AccountError):
        accounts.ensure_account("..", prefix=prefix, group=g, homes_dir=tmp_path / "h")
    assert not _group_exists(g) and not (tmp_path / "h").exists()


def _group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


# ----- home files -----

@pytest.fixture
def home(tmp_path):
    """A home owned by a user other than the hub when root (any uid will do), else by the hub."""
    h = tmp_path / "home"
    h.mkdir(mode=0o700)
    uid, gid = (54321, 54322) if ROOT else (os.getuid(), os.getgid())
    if ROOT:
        os.chown(h, uid, gid)
    return h, uid, gid


def _owner_mode(p):
    st = os.lstat(p)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_write_file_makes_folders_and_file_owned_by_user(home):
    h, uid, gid = home
    p = homefiles.write_file(h, ".posehub/storage.json", '{"a": 1}', uid=uid, gid=gid)
    assert p == h / ".posehub/storage.json" and p.read_text() == '{"a": 1}'
    assert _owner_mode(h / ".posehub") == (uid, gid, 0o700)
    assert _owner_mode(p) == (uid, gid, 0o600)
    homefiles.write_file(h, ".posehub/storage.json", b"new", uid=uid, gid=gid, mode=0o644)
    assert p.read_bytes() == b"new" and _owner_mode(p) == (uid, gid, 0o644)
    homefiles.write_file(h, ".posehub/storage.json", b"ignored", uid=uid, gid=gid, only_if_missing=True)
    assert p.read_bytes() == b"new"
    assert sorted(os.listdir(h / ".posehub")) == ["storage.json"]  # no temp file left
    d = homefiles.make_dirs(h, "a/b/c", uid=uid, gid=gid, mode=0o750)
    assert d.is_dir() and _owner_mode(h / "a") == _owner_mode(d) == (uid, gid, 0o750)


def test_no_writing_through_a_linked_folder(home, tmp_path):
    h, uid, gid = home
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    os.symlink(elsewhere, h / ".posehub")
    with pytest.raises(HomeFileError, match=r"~/\.posehub is a symbolic link"):
        homefiles.write_file(h, ".posehub/storage.json", "x", uid=uid, gid=gid)
    with pytest.raises(HomeFileError, match="symbolic link"):
        homefiles.make_dirs(h, ".posehub/sub", uid=uid, gid=gid)
    with pytest.raises(HomeFileError, match="symbolic link"):
        homefiles.ensure_symlink(h, ".posehub/data", Path("/srv"), uid=uid, gid=gid)
    assert os.listdir(elsewhere) == []


def test_a_link_at_the_file_is_replaced_not_followed(home, tmp_path):
    h, uid, gid = home
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0")
    (h / ".posehub").mkdir()
    if ROOT:
        os.chown(h / ".posehub", uid, gid)
    os.symlink(target, h / ".posehub/storage.json")
    p = homefiles.write_file(h, ".posehub/storage.json", "{}", uid=uid, gid=gid)
    assert not p.is_symlink() and p.read_text() == "{}" and _owner_mode(p) == (uid, gid, 0o600)
    assert target.read_text() == "root:x:0:0"


def test_folders_not_owned_by_the_user_are_refused(home):
    h, uid, gid = home
    if not ROOT:
        pytest.skip("making a folder owned by someone else needs root")
    (h / "rootdir").mkdir()
    with pytest.raises(HomeFileError, match="does not belong"):
        homefiles.write_file(h, "rootdir/f", "x", uid=uid, gid=gid)
    with pytest.raises(HomeFileError, match="does not belong"):
        homefiles.write_file(h, "f", "x", uid=uid + 1, gid=gid)  # the home itself


def test_bad_relative_paths(home):
    h, uid, gid = home
    for rel in ["", "/etc/passwd", "../x", "a/../../x", "."]:
        with pytest.raises(HomeFileError):
            homefiles.write_file(h, rel, "x", uid=uid, gid=gid)


def test_symlinks(home, tmp_path):
    h, uid, gid = home
    link = homefiles.ensure_symlink(h, "data/shared", Path("/srv/a"), uid=uid, gid=gid)
    assert os.readlink(link) == "/srv/a" and _owner_mode(link)[:2] == (uid, gid)
    assert _owner_mode(h / "data") == (uid, gid, 0o700)
    homefiles.ensure_symlink(h, "data/shared", Path("/srv/b"), uid=uid, gid=gid)  # an old link is replaced
    assert os.readlink(link) == "/srv/b" and _owner_mode(link)[:2] == (uid, gid)
    homefiles.ensure_symlink(h, "data/shared", Path("/srv/b"), uid=uid, gid=gid)  # idempotent
    assert sorted(os.listdir(h / "data")) == ["shared"]

    (h / "data/mine").mkdir()
    (h / "data/mine/notes.txt").write_text("keep")
    with pytest.raises(HomeFileError, match="folder, not a link"):
        homefiles.ensure_symlink(h, "data/mine", Path("/srv/a"), uid=uid, gid=gid)
    assert (h / "data/mine/notes.txt").read_text() == "keep" and not (h / "data/mine").is_symlink()

    assert homefiles.remove_link(h, "data/shared", uid=uid) is True and not os.path.lexists(link)
    assert homefiles.remove_link(h, "data/shared", uid=uid) is False
    assert homefiles.remove_link(h, "data/mine", uid=uid) is False and (h / "data/mine/notes.txt").exists()
    assert homefiles.remove_link(h, "nowhere/x", uid=uid) is False
