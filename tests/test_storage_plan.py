"""S3 storage as plain data: which buckets a user sees, the STS session policy, the s3fs command,
the config checks, and the client-side read-only guard. No servers."""

from __future__ import annotations

import functools
import json
import pickle
import re

import pytest
import yaml

from posehub import storage
from posehub.names import valid_username

from posehub.hub import s3creds, s3plan
from posehub.config import DEFAULT_CONFIG, ConfigError, validate

ROLE = "arn:aws:iam::123456789012:role/posehub-users"


def s3_config(**buckets) -> dict:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["buckets"] = {
        "backend": "s3", "endpoint_url": "http://127.0.0.1:9000", "sts": {"role_arn": ROLE},
        "shared": [
            {"name": "openfield-demo"},
            {"name": "lab-scratch", "read_only": False, "groups": ["lab"]},
            {"name": "other-lab", "groups": ["other"]},
            {"name": "minio-videos", "endpoint_url": "http://10.0.0.5:9000", "region": "eu-west-1",
             "keys_env": "MINIO"},
        ],
        "home": {"name": "posehub-home"},
        **buckets,
    }
    return raw


def test_plan_filters_by_group_and_gives_only_the_own_prefix():
    cfg = validate(s3_config())
    plan = s3plan.plan(cfg, "alice", ["lab"])
    assert [(a.name, a.bucket, a.prefix, a.mountpoint, a.read_only) for a in plan] == [
        ("openfield-demo", "openfield-demo", "", "buckets/openfield-demo", True),
        ("lab-scratch", "lab-scratch", "", "buckets/lab-scratch", False),
        ("minio-videos", "minio-videos", "", "buckets/minio-videos", True),
        ("home", "posehub-home", "alice/", "home-bucket", False),
    ]
    minio = plan[2]
    assert (minio.endpoint_url, minio.region, minio.uses_sts) == ("http://10.0.0.5:9000", "eu-west-1", False)
    assert plan[0].endpoint_url == "http://127.0.0.1:9000" and plan[0].region == "us-east-1"
    assert [a.name for a in s3plan.plan(cfg, "bob", [])] == ["openfield-demo", "minio-videos", "home"]


def test_session_policy_is_exactly_the_visible_buckets_and_the_own_prefix():
    cfg = validate(s3_config())
    policy = s3plan.session_policy(s3plan.plan(cfg, "alice", ["lab"]))
    write = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    assert policy == {"Version": "2012-10-17", "Statement": [
        {"Sid": "ListSharedBuckets", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": ["arn:aws:s3:::openfield-demo", "arn:aws:s3:::lab-scratch"]},
        {"Sid": "ReadSharedBuckets", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": ["arn:aws:s3:::openfield-demo/*", "arn:aws:s3:::lab-scratch/*"]},
        {"Sid": "WriteSharedBuckets", "Effect": "Allow", "Action": write,
         "Resource": ["arn:aws:s3:::lab-scratch/*"]},
        {"Sid": "ListOwnHomePrefix", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": "arn:aws:s3:::posehub-home",
         "Condition": {"StringLike": {"s3:prefix": ["alice/", "alice/*"]}}},
        {"Sid": "LocateHomeBucket", "Effect": "Allow", "Action": "s3:GetBucketLocation",
         "Resource": "arn:aws:s3:::posehub-home"},
        {"Sid": "ReadWriteOwnHomePrefix", "Effect": "Allow", "Action": ["s3:GetObject"] + write,
         "Resource": "arn:aws:s3:::posehub-home/alice/*"},
    ]}
    text = json.dumps(policy)
    # nothing else: not the other lab's bucket, not the bucket with static keys, not the whole home bucket
    assert "other-lab" not in text and "minio-videos" not in text and "posehub-home/*" not in text
    assert "Deny" not in text and '"*"' not in text


def test_session_policy_of_a_user_who_sees_no_shared_bucket():
    cfg = validate(s3_config(shared=[]))
    policy = s3plan.session_policy(s3plan.plan(cfg, "bob", []))
    assert [s["Sid"] for s in policy["Statement"]] == ["ListOwnHomePrefix", "LocateHomeBucket",
                                                        "ReadWriteOwnHomePrefix"]
    assert policy["Statement"][2]["Resource"] == "arn:aws:s3:::posehub-home/bob/*"


def test_a_session_policy_over_the_sts_limit_is_refused_with_the_reason():
    cfg = validate(s3_config(shared=[{"name": f"bucket-number-{i:03d}"} for i in range(60)]))
    with pytest.raises(ValueError, match="over STS's limit of 2048"):
        s3plan.packed(s3plan.session_policy(s3plan.plan(cfg, "alice", [])))


def test_role_session_name_is_what_sts_accepts():
    assert s3plan.role_session_name("alice") == "posehub-alice"
    assert s3plan.role_session_name("a b/c") == "posehub-a-b-c"
    assert len(s3plan.role_session_name("x" * 100)) == 64


def test_s3fs_command_mounts_the_prefix_read_only_where_configured(tmp_path):
    cfg = validate(s3_config())
    demo, _, minio, home = s3plan.plan(cfg, "alice", ["lab"])
    cmd = s3plan.s3fs_command(home, tmp_path / "home-bucket", timeout=5, session_token=True)
    assert cmd[:3] == ["s3fs", "posehub-home:/alice", str(tmp_path / "home-bucket")]
    opts = [cmd[i + 1] for i, c in enumerate(cmd) if c == "-o"]
    assert "ro" not in opts and "use_session_token" in opts
    assert {"url=http://127.0.0.1:9000", "use_path_request_style", "endpoint=us-east-1", "connect_timeout=5"} <= set(opts)
    opts = [x for x in s3plan.s3fs_command(demo, tmp_path / "d") if not x.startswith("-")]
    assert "ro" in opts and "use_session_token" not in opts
    assert "endpoint=eu-west-1" in s3plan.s3fs_command(minio, tmp_path / "m")


def test_aws_buckets_use_virtual_hosts_and_no_url(tmp_path):
    raw = s3_config(endpoint_url="")
    cfg = validate(raw)
    cmd = s3plan.s3fs_command(s3plan.plan(cfg, "alice", [])[0], tmp_path / "x")
    assert not any(x.startswith("url=") or x == "use_path_request_style" for x in cmd)


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(sts={}), "buckets.shared[0]: needs credentials for users: set keys_file or keys_env"),
    (lambda b: b["shared"][3].update(keys_file="/k"), "buckets.shared[3]: give keys_file or keys_env, not both"),
    (lambda b: b["shared"].append({"name": "openfield-demo"}),
     "buckets.shared[4].name: 'openfield-demo' is already used by buckets.shared[0]"),
    (lambda b: b["home"].update(name="lab-scratch"),
     "buckets.home.name: 'lab-scratch' is already used by buckets.shared[1]"),
    (lambda b: b["shared"][0].update(keys_env="lower"), "buckets.shared[0].keys_env"),
    (lambda b: b["mount"].update(options=["allow_other,uid=0"]) if "mount" in b else b.update(
        mount={"options": ["allow_other,uid=0"]}), "buckets.mount.options[0]"),
    (lambda b: b["sts"].update(duration_seconds=60), "buckets.sts.duration_seconds"),
    (lambda b: b["sts"].update(credentials_port=8000),
     "buckets.sts.credentials_port: port 8000 is already used by hub.port"),
])
def test_bad_bucket_config_is_one_clear_message(change, message):
    raw = s3_config()
    change(raw["buckets"])
    with pytest.raises(ConfigError) as e:
        validate(raw, "posehub.yaml")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_static_keys_are_read_from_a_file_or_the_hubs_environment(tmp_path):
    cfg = validate(s3_config())
    minio = s3plan.plan(cfg, "alice", [])[1]
    assert s3creds.static_keys(minio, {"MINIO_ACCESS_KEY_ID": "k", "MINIO_SECRET_ACCESS_KEY": "s"}) == \
        s3creds.Credentials("k", "s")
    with pytest.raises(s3creds.CredentialsError, match="MINIO_ACCESS_KEY_ID and MINIO_SECRET_ACCESS_KEY"):
        s3creds.static_keys(minio, {})
    f = tmp_path / "keys"
    f.write_text("AKID:SECRET\n")
    assert s3creds.read_keys_file(f, "x") == s3creds.Credentials("AKID", "SECRET")
    f.write_text("only-one-part\n")
    with pytest.raises(s3creds.CredentialsError, match="must hold one line ACCESS_KEY_ID:SECRET_ACCESS_KEY"):
        s3creds.read_keys_file(f, "x")
    with pytest.raises(s3creds.CredentialsError, match="cannot read keys file"):
        s3creds.read_keys_file(tmp_path / "missing", "x")


def write_manifest(tmp_path, monkeypatch, buckets):
    path = tmp_path / "storage.json"
    path.write_text(json.dumps({"backend": "s3", "user": "alice", "buckets": buckets}))
    monkeypatch.setenv(storage.MANIFEST_ENV, str(path))
    return path


def entry(name, bucket, prefix="", read_only=False, **kw):
    return {"name": name, "kind": "home" if name == "home" else "shared", "bucket": bucket, "prefix": prefix,
            "url": f"s3://{bucket}/{prefix}", "path": f"/home/alice/{name}", "mounted": True, "note": "",
            "read_only": read_only, "endpoint_url": "http://127.0.0.1:1", "region": "us-east-1",
            "credentials": {"access_key_id": "k", "secret_access_key": "s", "session_token": "t"}, **kw}


def test_storage_reads_the_manifest(tmp_path, monkeypatch):
    write_manifest(tmp_path, monkeypatch, [entry("demo", "demo", read_only=True),
                                           entry("home", "posehub-home", "alice/")])
    assert storage.url() == "s3://posehub-home/alice/"
    assert storage.url("home", "/runs/a.csv") == "s3://posehub-home/alice/runs/a.csv"
    opts = storage.storage_options("home")
    assert "key" not in opts and "secret" not in opts  # the credentials come from the manifest, read again as they end
    frozen = opts["session"].botocore_credentials().get_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("k", "s", "t")
    assert pickle.loads(pickle.dumps(opts["session"])).manifest == str(tmp_path / "storage.json")
    assert opts["default_block_size"] == storage.BLOCK_SIZE and opts["endpoint_url"] == "http://127.0.0.1:1"
    with pytest.raises(storage.StorageError, match=r"no bucket 'nope' in this workspace \(you have: demo, home\)"):
        storage.url("nope")


def test_storage_without_a_manifest_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.MANIFEST_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(storage.StorageError, match="no storage manifest at .*not a PoseHub workspace"):
        storage.filesystem()


def test_writes_to_read_only_buckets_are_refused_before_anything_is_sent(tmp_path, monkeypatch):
    # the endpoint is a closed port: a refusal that reached the network would be a connection error
    write_manifest(tmp_path, monkeypatch, [entry("demo", "demo", read_only=True),
                                           entry("home", "posehub-home", "alice/")])
    fs = storage.filesystem("demo")
    src = tmp_path / "f.txt"
    src.write_text("x")
    for write in (lambda: fs.pipe("demo/a", b"x"), lambda: fs.put(str(src), "demo/a"),
                  lambda: fs.open("demo/a", "wb"), lambda: fs.rm("demo/a"), lambda: fs.touch("demo/a"),
                  lambda: fs.copy("posehub-home/alice/x", "demo/x"), lambda: fs.mkdir("demo/sub")):
        with pytest.raises(PermissionError, match="bucket 'demo' is read-only in PoseHub"):
            write()


def test_expired_credentials_are_named_not_an_access_denied(tmp_path, monkeypatch):
    creds = {"access_key_id": "k", "secret_access_key": "s", "session_token": "t",
             "expiration": "2020-01-01T00:00:00+00:00"}
    write_manifest(tmp_path, monkeypatch, [entry("home", "posehub-home", "alice/", credentials=creds)])
    with pytest.raises(storage.StorageError, match="expired at 2020-01-01 00:00:00 UTC, and the hub, which renews them while your server runs, "
                                                     "has not: restart your server"):
        storage.filesystem()
    creds["expiration"] = "2999-01-01T00:00:00Z"
    write_manifest(tmp_path, monkeypatch, [entry("home", "posehub-home", "alice/", credentials=creds)])
    creds_of = storage.storage_options()["session"].botocore_credentials().get_credentials()
    assert creds_of.get_frozen_credentials().token == "t"


# ---------------------------------------------------------------- the policy evaluated, for every name the hub accepts


@functools.lru_cache(maxsize=None)
def _pattern(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def _like(pattern: str, value: str) -> bool:
    """IAM's matching of ARNs and StringLike: * is any run of characters (/ included), ? is one character."""
    return _pattern(pattern).fullmatch(value) is not None


def allowed(policy: dict, action: str, resource: str, prefix: str | None = None) -> bool:
    """Whether an identity-less session with only ``policy`` may do ``action`` (Allow statements; no Deny here)."""
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if st["Effect"] != "Allow" or not any(_like(a, action) for a in actions) \
                or not any(_like(r, resource) for r in resources):
            continue
        wanted = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if wanted is not None and (prefix is None or not any(_like(w, prefix) for w in wanted)):
            continue
        return True
    return False


def accepted_names() -> list[str]:
    import random

    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._@-"
    names = ["alice", "alice2", "alic", "a", "0", "alice.smith", "alice@uni.example", "a-b_c.d@e", "x" * 64]
    while len(names) < 300:
        n = rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") + "".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if valid_username(n):
            names.append(n)
    return names


def test_the_policy_of_every_accepted_name_grants_only_its_own_prefix(tmp_path):
    """For every user name the hub accepts (posehub.names), the session policy lets the user read, write and list
    keys under ``<name>/`` and nothing of any other name: not ``alice2/...`` for alice, nor a key named ``alice``."""
    names = accepted_names()
    cfg = validate(s3_config(shared=[]))
    for user in names:
        near = [user, user + "2", user + "x", user[:-1] or "z", user + ".", user + "@b"]  # names sharing its start
        keys = [k for n in near + names[:40] for k in (f"{n}/data.csv", n, f"{n}/")] + ["alice2/secret"]
        home = next(a for a in s3plan.plan(cfg, user, []) if a.kind == "home")
        policy = s3plan.session_policy([home])
        for key in keys:
            mine = key.startswith(f"{user}/")
            for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
                assert allowed(policy, action, f"arn:aws:s3:::posehub-home/{key}") == mine, (user, action, key)
            assert allowed(policy, "s3:ListBucket", "arn:aws:s3:::posehub-home", prefix=key) == mine, (user, key)
        assert not allowed(policy, "s3:ListBucket", "arn:aws:s3:::posehub-home", prefix="")
        assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::other-bucket/" + f"{user}/x")


@pytest.mark.parametrize("name", ["*", "a*", "a?", "${aws:username}", "al/ice", "a..b", "Alice"])
def test_names_the_hub_refuses_never_reach_a_policy(tmp_path, name):
    assert not valid_username(name)
    home = next(a for a in s3plan.plan(validate(s3_config(shared=[])), name, []) if a.kind == "home")
    with pytest.raises(ValueError, match="is not a PoseHub user name"):
        s3plan.session_policy([home])
