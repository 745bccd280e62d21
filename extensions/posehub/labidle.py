"""A Jupyter server extension: JupyterLab asks its own server how long it has been idle, to warn before
the idle culler stops it (``GET <base_url>api/posehub/idle``).

The server knows its own activity first hand (the hub hears of it every few minutes); asking does not
count as activity. The limit and the warning time come from the spawner's environment
(:mod:`posehub.culling`); without them (culling off) the answer says so.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .idlewarn import IDLE_LIMIT_ENV, IDLE_WARN_ENV, warning


class IdleHandler(APIHandler):
    _track_activity = False  # asking is not activity

    @web.authenticated
    def get(self):
        limit = float(os.environ.get(IDLE_LIMIT_ENV) or 0)
        if not limit:
            self.finish(json.dumps({"culling": False}))
            return
        last = self.serverapp.web_app.last_activity()
        idle = (datetime.now(timezone.utc) - last).total_seconds()
        self.finish(json.dumps({"culling": True, **warning(limit, idle, float(os.environ.get(IDLE_WARN_ENV) or 0))}))


def _jupyter_server_extension_points():
    return [{"module": "posehub.labidle"}]


def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, "api/posehub/idle"), IdleHandler)])
