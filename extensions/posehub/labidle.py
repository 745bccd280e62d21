"""A Jupyter server extension: JupyterLab asks its own server how long it has been idle, to warn before
the idle culler stops it (``GET <base_url>api/posehub/idle``).

The server knows its own activity first hand (the hub hears of it every few minutes); asking does not
count as activity. The limit and the warning time come from the spawner's environment
(:mod:`posehub.culling`); without them (culling off) the answer says so.

Work on the desktop (:mod:`posehub.desktop`: labelling in SLEAP or napari) is activity too: its traffic goes
over one long websocket, which the server does not count, so every minute the server asks the desktop's X
server how long ago the last key or mouse input was and counts that as its last activity. A desktop left
open with no one at it is idle, and culled with the server.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import ioloop, web

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


DESKTOP_CHECK_S = 60.0
DESKTOP_ACTIVITY = "posehub_desktop_last_activity"


async def desktop_activity(serverapp) -> None:
    """Count input on this server's desktop as the server's activity."""
    from . import desktop

    idle = await ioloop.IOLoop.current().run_in_executor(None, desktop.input_idle_seconds)
    if idle is None:
        return
    # jupyter_server counts every ``*_last_activity`` setting in ServerApp.last_activity (its hook for extensions)
    serverapp.web_app.settings[DESKTOP_ACTIVITY] = datetime.now(timezone.utc) - timedelta(seconds=idle)


def _jupyter_server_extension_points():
    return [{"module": "posehub.labidle"}]


def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, "api/posehub/idle"), IdleHandler)])
    serverapp.posehub_desktop_check = ioloop.PeriodicCallback(lambda: desktop_activity(serverapp),
                                                               DESKTOP_CHECK_S * 1000)
    serverapp.posehub_desktop_check.start()
