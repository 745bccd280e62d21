"""Refusals of a spawn, shared by the one-machine spawner and the hub pod's hooks (posehub.k8s.hubpod)."""

from __future__ import annotations

from tornado import web


class ProfileError(web.HTTPError):
    """A spawn request that cannot be served; the message is shown to the user as is."""

    def __init__(self, status: int, message: str):
        super().__init__(status, log_message=message)
        self.jupyterhub_message = message
        self.reason = "Cannot start this profile"

    def __str__(self):
        return self.jupyterhub_message
