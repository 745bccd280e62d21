"""Local accounts: JupyterHub's NativeAuthenticator, plus the bootstrap admin.

Users sign up at ``/hub/signup``; an admin approves them at ``/hub/authorize``
(unless ``auth.local.open_signup``). The first admin of ``admins`` is created
at the first start with the password ``posehub up`` generated and stored in
``<state_dir>/admin-password`` (mode 0600).
"""

from __future__ import annotations

from pathlib import Path

from nativeauthenticator import NativeAuthenticator
from traitlets import Unicode


class PoseHubLocalAuthenticator(NativeAuthenticator):
    bootstrap_admin = Unicode("", config=True, help="Admin account created at first start.")
    bootstrap_password_file = Unicode(
        "", config=True, help="File holding the bootstrap admin's password (created by `posehub up`)."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bootstrap()

    def _bootstrap(self):
        if not (self.bootstrap_admin and self.bootstrap_password_file):
            return
        if self.user_exists(self.bootstrap_admin):
            return
        path = Path(self.bootstrap_password_file)
        if not path.exists():
            return
        password = path.read_text().strip()
        self.create_user(self.bootstrap_admin, password)
        if self.user_exists(self.bootstrap_admin):
            self.log.info("Created the bootstrap admin account %r", self.bootstrap_admin)
        else:
            self.log.error("Could not create the bootstrap admin account %r", self.bootstrap_admin)
