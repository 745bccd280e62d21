"""A real S3 (and STS, IAM) server on loopback for tests: moto in server mode.

``MotoServer(auth=True)`` turns on moto's IAM enforcement: every request must
be signed by keys moto knows, and those keys' policies are evaluated. The
first requests (creating an admin user and its keys) are let through
unauthenticated, as moto's ``INITIAL_NO_AUTH_ACTION_COUNT`` allows.
``MotoServer(auth=True, sts_max_seconds=N)`` runs moto through
``tests/motoserve.py``: STS credentials last at most N seconds and are refused
with ``ExpiredToken`` after their end, as AWS does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import requests

from hubfixture import free_port, wait_for

MOTO = Path(sys.executable).with_name("moto_server")
EXPIRING_MOTO = Path(__file__).with_name("motoserve.py")
REGION = "us-east-1"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


class MotoServer:
    def __init__(self, workdir: Path, auth: bool = False, sts_max_seconds: int | None = None):
        self.port = free_port()
        self.sts_max_seconds = sts_max_seconds
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = auth
        self.log_file = workdir / f"moto-{self.port}.log"
        self.proc = None
        self.keys = ("testing", "testing")  # any keys do without auth

    def start(self) -> MotoServer:
        env = dict(os.environ)
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"  # create_user, put_user_policy, create_access_key
        cmd = [str(MOTO)]
        if self.sts_max_seconds:
            env["POSEHUB_TEST_STS_MAX_SECONDS"] = str(self.sts_max_seconds)
            cmd = [sys.executable, str(EXPIRING_MOTO)]
        self.proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                     stdout=open(self.log_file, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for(lambda: requests.get(f"{self.url}/moto-api/", timeout=2).status_code < 500, timeout=60,
                 what=f"moto server at {self.url}")
        if self.auth:
            iam = self.client("iam")
            iam.create_user(UserName="hub")
            iam.put_user_policy(UserName="hub", PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY))
            k = iam.create_access_key(UserName="hub")["AccessKey"]
            self.keys = (k["AccessKeyId"], k["SecretAccessKey"])
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)

    def role(self, name: str, policy: dict) -> str:
        """A role anyone here may assume, with ``policy`` as its own; returns its ARN."""
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                         "Action": "sts:AssumeRole"}]}
        iam = self.client("iam")
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(RoleName=name, PolicyName="own", PolicyDocument=json.dumps(policy))
        return iam.get_role(RoleName=name)["Role"]["Arn"]

    def client(self, service: str, keys: tuple | None = None, token: str | None = None):
        key, secret = keys or self.keys
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, aws_access_key_id=key,
                            aws_secret_access_key=secret, aws_session_token=token)

    def keys_file(self, path: Path, keys: tuple | None = None) -> Path:
        path.write_text("%s:%s\n" % (keys or self.keys))
        path.chmod(0o600)
        return path

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        s3 = self.client("s3")
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        return out


def lab_buckets(s3: MotoServer, workdir: Path, credentials_port: int) -> dict:
    """A lab on ``s3`` as the Kubernetes tests use it, and its ``buckets`` section of posehub.yaml: a read-only bucket
    for everyone (``lab-openfield``), a read-write one for the group staff (``lab-staff``), everyone's home prefix
    (``lab-homes``), the users' role any hub may assume; credentials from STS at ``credentials_port``."""
    admin = s3.client("s3")
    for b in ("lab-openfield", "lab-staff", "lab-homes"):
        admin.create_bucket(Bucket=b)
    role = s3.role("posehub-users", {"Version": "2012-10-17",
                                     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
    return {"backend": "s3", "region": REGION, "endpoint_url": s3.url,
            "hub_keys_file": str(s3.keys_file(workdir / "hub-keys")),
            "sts": {"role_arn": role, "credentials_port": credentials_port}, "mount": {"timeout_seconds": 5},
            "shared": [{"name": "lab-openfield", "read_only": True},
                       {"name": "lab-staff", "read_only": False, "groups": ["staff"]}],
            "home": {"name": "lab-homes"}}
