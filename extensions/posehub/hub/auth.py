"""Local accounts: JupyterHub's NativeAuthenticator, plus the admins made at the first start.

Users sign up at ``/hub/signup``; an admin approves them at ``/hub/authorize``
(unless ``auth.local.open_signup``). Every name in ``admins`` is created at the
first start with a password ``posehub up`` generated and printed once
(:func:`admin_password_file`, mode 0600). A name in ``admins`` that does not
exist yet (the hub was started without ``posehub up``, or the account was
deleted) can be signed up for, but only an existing admin's approval lets it
in: NativeAuthenticator alone would approve it at once, and make whoever
claimed it an admin. User names follow :mod:`posehub.names`; the sign-up form
says so when a name breaks the rule.
"""

from __future__ import annotations

from pathlib import Path

from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import SignUpHandler
from traitlets import Dict

from ..names import USERNAME_RULE, valid_username


def admin_password_file(state_dir: Path, admins: list[str], name: str) -> Path:
    """Where the password of admin ``name`` is kept: ``admin-password`` for the first, else ``admin-password-<name>``."""
    return Path(state_dir) / ("admin-password" if admins and name == admins[0] else f"admin-password-{name}")


class PoseHubSignUpHandler(SignUpHandler):
    """NativeAuthenticator's sign-up page, saying what a user name may be, and never "you can log in now" to
    someone whose sign-up waits for an admin."""

    def get_result_message(self, user, assume_user_is_human, username_already_taken, confirmation_matches,
                           user_is_admin):
        name = self.authenticator.normalize_username(self.get_body_argument("username", "", strip=False))
        if assume_user_is_human and not username_already_taken and confirmation_matches and user is None \
                and not valid_username(name):
            return "alert-danger", f"'{name}' cannot be a user name here: use {USERNAME_RULE}."
        if user is not None and not user.is_authorized:  # (open sign-up or not: an admin name waits)
            return "alert-info", "Your information has been sent to the admin."
        return super().get_result_message(user, assume_user_is_human, username_already_taken, confirmation_matches,
                                          user_is_admin)


class PoseHubLocalAuthenticator(NativeAuthenticator):
    bootstrap_passwords = Dict(
        config=True, help="Admins made at the first start: name -> file holding their password (made by `posehub up`).")

    _bootstrapping = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bootstrap()

    def get_handlers(self, app):
        return [(path, PoseHubSignUpHandler if handler is SignUpHandler else handler)
                for path, handler in super().get_handlers(app)]

    def create_user(self, username, password, **kwargs):
        """A sign-up; one for a name in ``admins`` waits for an existing admin's approval, even with open sign-up."""
        user = super().create_user(username, password, **kwargs)
        if user is not None and not self._bootstrapping and user.username in self.admin_users and user.is_authorized:
            user.is_authorized = False
            self.db.commit()
            self.log.warning("Sign-up for the admin name %r: it waits for an existing admin's approval", user.username)
        return user

    def _bootstrap(self):
        for name, file in self.bootstrap_passwords.items():
            path = Path(file)
            if self.user_exists(name) or not path.exists():
                continue
            self._bootstrapping = True
            try:
                self.create_user(name, path.read_text().strip())
            finally:
                self._bootstrapping = False
            if self.user_exists(name):
                self.log.info("Created the admin account %r", name)
            else:
                self.log.error("Could not create the admin account %r", name)
