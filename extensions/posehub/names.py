"""The one rule for hub user names, for every way in (sign-up, single sign-on, the REST API).

A name is lower-case letters, digits and ``.``, ``_``, ``@``, ``-``, starting with a
letter or digit, at most 64 characters: ``alice``, ``alice.smith``,
``alice@uni.example``, ``248289761001`` (and no ``..``). Such a name is safe everywhere PoseHub
puts it: a system account (:func:`posehub.hub.accounts.system_name`), an S3 key
prefix (``<name>/``), IAM policy text (no ``*``, ``?``, ``$``, braces or quotes,
which a policy would read as wildcards or variables), a URL path and a file name.
JupyterHub checks it at every sign-in and every user the API creates
(``Authenticator.username_pattern``), after lower-casing the name.
"""

from __future__ import annotations

import re

USERNAME_PATTERN = r"^(?!.*\.\.)[a-z0-9][a-z0-9._@-]{0,63}$"  # (no "..": never a path's parent)
USERNAME_RULE = ("lower-case letters, digits and . _ @ -, starting with a letter or digit, "
                 "no '..', at most 64 characters")
_USERNAME = re.compile(USERNAME_PATTERN)


def valid_username(name: str) -> bool:
    return bool(_USERNAME.match(name or ""))


def check_username(name: str) -> str:
    """The name itself, or ValueError naming the rule."""
    if not valid_username(name):
        raise ValueError(f"'{name}' is not a PoseHub user name: use {USERNAME_RULE}")
    return name
