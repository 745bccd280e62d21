"""Watched folders, the pure rules (posehub.watch.policy): what a watch may be, what is new."""

from __future__ import annotations

import pytest

from posehub.watch.policy import (Bucket, Found, WatchRefused, check_spec, clean_model, clean_prefix, is_video,
                                  output_prefix, to_queue)

BUCKETS = [Bucket("openfield-demo", "openfield-demo", "", True), Bucket("lab", "lab", "", False),
           Bucket("home", "posehub-home", "alice/", False)]
PROFILES = {"pose-cpu": "Pose (CPU)"}
GOOD = {"bucket": "lab", "prefix": "incoming", "model": "~/runs/tiny/", "profile": "pose-cpu",
        "out_prefix": "/analysed//"}


def test_a_good_watch_is_normalised():
    s = check_spec(GOOD, BUCKETS, PROFILES)
    assert (s.bucket, s.prefix, s.model, s.profile, s.out_bucket, s.out_prefix) == \
        ("lab", "incoming/", "runs/tiny", "pose-cpu", "lab", "analysed/")
    s = check_spec({**GOOD, "bucket": "openfield-demo", "prefix": "", "out_bucket": "home"}, BUCKETS, PROFILES)
    assert (s.bucket, s.prefix, s.out_bucket) == ("openfield-demo", "", "home")


@pytest.mark.parametrize("change, message", [
    ({"bucket": "bobs-bucket"}, "You may not read bucket 'bobs-bucket': buckets you may use are home, lab, openfield-demo."),
    ({"bucket": "openfield-demo"}, "bucket 'openfield-demo' is read-only for you"),
    ({"out_bucket": "secret"}, "You may not read bucket 'secret'"),
    ({"profile": "gpu-big"}, "Worker profile 'gpu-big' is not one you may use. Profiles you may use: pose-cpu."),
    ({"prefix": "../bob/"}, "may not contain '..'"),
    ({"prefix": "a\nb"}, "control characters"),
    ({"prefix": 3}, "prefix must be text"),
    ({"out_prefix": "incoming/results"}, "may not be inside the watched prefix"),
    ({"prefix": "", "out_prefix": "x/"}, "may not be inside the watched prefix (the whole bucket)"),
    ({"out_prefix": "/"}, "out_prefix must be a folder"),
    ({"model": "/etc"}, "give a run folder in your home"),
    ({"model": "~bob/runs"}, "give a run folder in your home"),
    ({"model": "s3://lab/m"}, "not a URL"),
    ({"model": "~/../bob/runs"}, "may not contain '..'"),
    ({"model": ""}, "missing: model"),
    ({"owner": "bob"}, "unknown field(s) owner"),
])
def test_bad_watches_are_refused_with_the_reason(change, message):
    with pytest.raises(WatchRefused) as e:
        check_spec({**GOOD, **change}, BUCKETS, PROFILES)
    assert message in str(e.value)


def test_not_an_object():
    with pytest.raises(WatchRefused, match="JSON object"):
        check_spec(["lab"], BUCKETS, PROFILES)


def test_prefixes_and_models():
    assert clean_prefix("a//b/./c", "p") == "a/b/c/"
    assert clean_prefix("  ", "p") == ""
    assert clean_model("runs/x") == "runs/x"
    with pytest.raises(WatchRefused, match="not your whole home"):
        clean_model("~/")


def test_videos_and_what_is_new():
    assert is_video("a/B.MP4") and is_video("x.avi") and not is_video("a/.hidden.mp4") and not is_video("a.csv")
    found = [Found("in/a.mp4", "e1", 10, 100.0), Found("in/b.mp4", "e2", 10, 199.5), Found("in/c.txt", "e3", 5, 1.0),
             Found("in/d.mp4", "e4", 10, None), Found("in/a.mp4", "e1", 10, 100.0)]
    # b.mp4 changed 0.5 s ago: still being copied; a.mp4 twice in one listing: once
    assert [f.key for f in to_queue(found, set(), now=200.0, settle_seconds=2)] == ["in/a.mp4", "in/d.mp4"]
    # the same key and ETag again (a copy of the same video, a restart): nothing new; new content: new
    assert [f.key for f in to_queue(found, {("in/a.mp4", "e1"), ("in/d.mp4", "e4")}, now=300.0,
                                    settle_seconds=2)] == ["in/b.mp4"]
    changed = [Found("in/a.mp4", "e9", 12, 100.0)]
    assert to_queue(changed, {("in/a.mp4", "e1")}, now=300.0, settle_seconds=2) == changed


def test_results_keep_the_folder_below_the_watched_prefix():
    assert output_prefix("out/", "in/day1/a.mp4", "in/") == "out/day1/"
    assert output_prefix("out/", "in/a.mp4", "in/") == "out/"


# ---------------------------------------------------------------- local listing (posehub.watch.sources)


def test_local_listing_never_follows_a_link(tmp_path):
    import hashlib
    import os

    from posehub.watch.sources import list_local

    bucket, other = tmp_path / "bucket", tmp_path / "bobs-home"
    (bucket / "in" / "day1").mkdir(parents=True)
    (bucket / "in" / ".hidden").mkdir()
    other.mkdir()
    (other / "secret.mp4").write_bytes(b"bob's video")
    (bucket / "in" / "a.mp4").write_bytes(b"alice's video")
    (bucket / "in" / "day1" / "b.MP4").write_bytes(b"another")
    (bucket / "in" / "notes.txt").write_bytes(b"not a video")
    (bucket / "in" / "empty.mp4").write_bytes(b"")
    (bucket / "in" / ".hidden" / "c.mp4").write_bytes(b"hidden")
    os.symlink(other / "secret.mp4", bucket / "in" / "link.mp4")  # a link to another's file
    os.symlink(other, bucket / "in" / "linked-dir")                # a link to another's folder
    os.mkfifo(bucket / "in" / "pipe.mp4")                          # not a regular file
    found = {f.key: f for f in list_local(bucket, "in/", {}, (".mp4",))}
    assert sorted(found) == ["in/a.mp4", "in/day1/b.MP4"]
    assert found["in/a.mp4"].etag == hashlib.md5(b"alice's video").hexdigest()  # as S3's ETag of the same bytes
    # the watched prefix itself a link: nothing
    os.symlink(other, bucket / "elsewhere")
    assert list_local(bucket, "elsewhere/", {}, (".mp4",)) == []
    assert list_local(bucket, "missing/", {}, (".mp4",)) == []
    # a file already hashed (same size and time) is not read again
    f = found["in/a.mp4"]
    again = list_local(bucket, "in/", {(f.key, f.size, f.mtime): "cached"}, (".mp4",))
    assert {g.key: g.etag for g in again}["in/a.mp4"] == "cached"
