"""My watched folders, from inside a workspace (notebooks, the widget's "Analyse videos" tab).

The spawner gives each server the watch service's address (``POSEHUB_WATCH_URL``); the server's own hub
token may reach it and sees and changes its own user's watches only. ::

    from posehub.watch import client
    client.create_watch("lab-videos", "incoming/", "~/runs/sleap-openfield", "cpu-small", "analysed/")
    client.list_watches()      # [{'id': 3, 'state': 'active', 'counts': {'done': 2, ...}, ...}]
    client.pause_watch(3); client.resume_watch(3); client.watch_items(3)
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

URL_ENV = "POSEHUB_WATCH_URL"


class WatchError(Exception):
    """What went wrong, in a sentence for the user."""


def _call(method: str, path: str, body: dict | None = None, timeout: float = 15) -> dict:
    base = os.environ.get(URL_ENV)
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not base or not token:
        raise WatchError("no watch service in this environment: watched folders are managed from inside a PoseHub "
                         f"workspace (${URL_ENV} and $JUPYTERHUB_API_TOKEN are set by the hub)")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base.rstrip("/") + "/" + path.lstrip("/"), data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Accept": "application/json",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read().decode(errors="replace")
        try:
            message = json.loads(raw)["message"]
        except (ValueError, KeyError, TypeError):
            message = raw[:300]
        raise WatchError(message or f"the watch service answered {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise WatchError(f"the watch service at {base} cannot be reached: {getattr(e, 'reason', e)}") from None


def list_watches() -> list[dict]:
    """My watches: ``id, owner, bucket, prefix, model, profile, out_prefix, state, reason, counts``."""
    return _call("GET", "api/watches")["watches"]


def create_watch(bucket: str, prefix: str, model: str, profile: str, out_prefix: str, *,
                 out_bucket: str = "") -> dict:
    """Watch ``bucket``/``prefix`` for new videos; each is analysed once with ``model`` on workers of
    ``profile`` and its results written under ``out_prefix`` (of ``out_bucket``, default the same bucket)."""
    return _call("POST", "api/watches", {"bucket": bucket, "prefix": prefix, "model": model, "profile": profile,
                                         "out_prefix": out_prefix, "out_bucket": out_bucket})


def pause_watch(watch_id: int) -> dict:
    return _call("POST", f"api/watches/{int(watch_id)}/pause", {})


def resume_watch(watch_id: int) -> dict:
    return _call("POST", f"api/watches/{int(watch_id)}/resume", {})


def delete_watch(watch_id: int) -> dict:
    return _call("DELETE", f"api/watches/{int(watch_id)}")


def watch_items(watch_id: int) -> list[dict]:
    """The videos a watch found: key, state (queued, running, done, failed), outputs, error, timing."""
    return _call("GET", f"api/watches/{int(watch_id)}/items")["items"]
