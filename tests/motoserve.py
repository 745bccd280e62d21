"""moto's server, with STS credentials that end: the S3 server the STS renewal tests run against.

moto issues STS credentials with an ``Expiration`` but accepts them for ever. Real S3 refuses
credentials after their end with ``ExpiredToken``; this launcher makes moto do the same, and caps
the lifetime it grants at ``POSEHUB_TEST_STS_MAX_SECONDS`` (AWS's own minimum is 900 s, too long
for a test): ``python motoserve.py -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import os
import re
import sys

from moto.core.utils import utcnow
from moto.core.authorization import ActionAuthenticatorMixin
from moto.s3.exceptions import S3ClientError
from moto.server import main
from moto.sts import models as sts_models

MAX_SECONDS = int(os.environ.get("POSEHUB_TEST_STS_MAX_SECONDS", "0") or 0)


class ExpiredToken(S3ClientError):
    code = 400

    def __init__(self):
        super().__init__("ExpiredToken", "The provided token has expired.")


_assume_role = sts_models.STSBackend.assume_role


def assume_role(self, region_name, role_session_name, role_arn, policy, duration, external_id):
    if MAX_SECONDS:
        duration = min(duration, MAX_SECONDS)
    return _assume_role(self, region_name, role_session_name, role_arn, policy, duration, external_id)


_s3_auth = ActionAuthenticatorMixin._authenticate_and_authorize_s3_action


def s3_auth(self, bucket_name=None, key_name=None):
    """Every S3 request signed with STS credentials past their end is refused (with or without moto's IAM
    enforcement, whose signature check disagrees with s3fs's on listings)."""
    match = re.search(r"Credential=([A-Z0-9]+)/", self.headers.get("Authorization", ""))
    if match:
        for role in sts_models.sts_backends[self.current_account]["aws"].assumed_roles:
            if role.access_key_id == match.group(1) and role.expiration <= utcnow():
                raise ExpiredToken()
    return _s3_auth(self, bucket_name, key_name)


sts_models.STSBackend.assume_role = assume_role
ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = s3_auth

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
