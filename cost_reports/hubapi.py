"""The few calls the cost service makes to JupyterHub's REST API, with its own service token.

The service's role (set in ``posehub.hub.hubapply.apply_costs``) grants
``list:users``, ``read:users``, ``read:servers`` and ``servers`` (to stop them),
``read:groups``, ``groups`` and ``admin:groups`` (the admin page's group members).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest


@dataclass(frozen=True)
class HubServer:
    name: str  # "" for the default server
    started: datetime | None
    profile: str | None
    ready: bool
    pending: str | None = None  # "spawn", "stop" or None


@dataclass(frozen=True)
class HubUser:
    name: str
    admin: bool
    groups: tuple[str, ...]
    servers: tuple[HubServer, ...]
    last_activity: datetime | None


def _time(value) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_user(model: dict) -> HubUser:
    """A user model of the REST API as a :class:`HubUser` (pure)."""
    servers = []
    for name, srv in (model.get("servers") or {}).items():
        options = srv.get("user_options") or {}
        servers.append(HubServer(name=name, started=_time(srv.get("started")), profile=options.get("profile"),
                                 ready=bool(srv.get("ready")), pending=srv.get("pending") or None))
    return HubUser(name=model["name"], admin=bool(model.get("admin")), groups=tuple(sorted(model.get("groups") or [])),
                   servers=tuple(servers), last_activity=_time(model.get("last_activity")))


class HubClient:
    def __init__(self, api_url: str | None = None, token: str | None = None):
        self.api_url = (api_url or os.environ["JUPYTERHUB_API_URL"]).rstrip("/")
        self.token = token or os.environ["JUPYTERHUB_API_TOKEN"]
        self.http = AsyncHTTPClient()

    async def _call(self, method: str, path: str, body: dict | None = None):
        req = HTTPRequest(
            f"{self.api_url}{path}", method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json",
                     "Accept": "application/jupyterhub-pagination+json"},
            body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
            allow_nonstandard_methods=True, request_timeout=30,
        )
        resp = await self.http.fetch(req, raise_error=False)
        if resp.code >= 400:
            raise HTTPClientError(resp.code, f"{method} {path}: {resp.body[:300]!r}", resp)
        return json.loads(resp.body) if resp.body else None

    async def new_token(self, user: str, scopes: list[str], expires_in: int, note: str) -> tuple[str, str]:
        """A short-lived token of ``user`` limited to ``scopes`` (the caller needs the ``tokens`` scope):
        (its id, the token)."""
        model = await self._call("POST", f"/users/{quote(user)}/tokens",
                                 {"scopes": scopes, "expires_in": expires_in, "note": note})
        return model["id"], model["token"]

    async def delete_token(self, user: str, token_id: str) -> None:
        await self._call("DELETE", f"/users/{quote(user)}/tokens/{quote(token_id)}")

    async def users(self) -> list[HubUser]:
        """Every user of the hub, with their servers (pending ones included)."""
        out, offset = [], 0
        while True:
            page = await self._call("GET", f"/users?include_stopped_servers=0&offset={offset}&limit=200")
            items = page["items"] if isinstance(page, dict) else page
            out.extend(parse_user(m) for m in items)
            if not isinstance(page, dict) or not page.get("_pagination", {}).get("next"):
                return out
            offset += len(items)

    async def user(self, name: str) -> HubUser | None:
        try:
            return parse_user(await self._call("GET", f"/users/{quote(name)}"))
        except HTTPClientError as e:
            if e.code == 404:
                return None
            raise

    async def stop_server(self, user: str, server: str) -> None:
        path = f"/users/{quote(user)}/server" if not server else f"/users/{quote(user)}/servers/{quote(server)}"
        await self._call("DELETE", path)

    async def groups(self) -> dict[str, tuple[str, ...]]:
        """Every group of the hub and its members (sorted)."""
        out, offset = {}, 0
        while True:
            page = await self._call("GET", f"/groups?offset={offset}&limit=200")
            items = page["items"] if isinstance(page, dict) else page
            out.update({g["name"]: tuple(sorted(g.get("users") or [])) for g in items})
            if not isinstance(page, dict) or not page.get("_pagination", {}).get("next"):
                return out
            offset += len(items)

    async def create_group(self, name: str) -> None:
        await self._call("POST", f"/groups/{quote(name)}", {})

    async def add_member(self, group: str, user: str) -> None:
        await self._call("POST", f"/groups/{quote(group)}/users", {"users": [user]})

    async def remove_member(self, group: str, user: str) -> None:
        await self._call("DELETE", f"/groups/{quote(group)}/users", {"users": [user]})
