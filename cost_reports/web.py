"""What every page and API handler of the admin and cost service shares: who is asking (JupyterHub OAuth),
the hub's users and groups, templates in the hub's look, errors as pages or JSON."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web

from .core import CostReporter
from .hubapi import HubClient, HubUser
from .periods import Period

ADMIN_SCOPE = "custom:posehub-costs:admin"
TEMPLATES = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                        autoescape=select_autoescape(["html"]))


class Directory:
    """Users and groups as the hub knows them, refreshed at most every ``ttl`` seconds."""

    def __init__(self, hub: HubClient, ttl: float = 2.0):
        self.hub, self.ttl = hub, ttl
        self.users: dict[str, HubUser] = {}
        self.at = 0.0
        self._lock = asyncio.Lock()

    def set(self, users: list[HubUser]) -> None:
        self.users, self.at = {u.name: u for u in users}, time.monotonic()

    async def refresh(self, force: bool = False) -> dict[str, HubUser]:
        async with self._lock:
            if force or time.monotonic() - self.at > self.ttl:
                self.set(await self.hub.users())
        return self.users

    def invalidate(self) -> None:
        """The next :meth:`refresh` asks the hub again (after a change made through it)."""
        self.at = 0.0

    def groups(self) -> set[str]:
        return {g for u in self.users.values() for g in u.groups}


class Base(HubOAuthenticated, web.RequestHandler):
    @property
    def rep(self) -> CostReporter:
        return self.settings["reporter"]

    @property
    def directory(self) -> Directory:
        return self.settings["directory"]

    @property
    def prefix(self) -> str:
        return self.settings["prefix"]

    @property
    def is_api(self) -> bool:
        return self.request.path.startswith(url_path_join(self.prefix, "api"))

    def prepare(self):
        # After authentication, so that requests with a token are exempt and browser forms
        # must carry JupyterHub's _xsrf token (tornado would check before authenticating).
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            self.get_current_user()
            self.check_xsrf_cookie()

    @property
    def user_name(self) -> str:
        return self.current_user["name"]

    async def is_admin(self) -> bool:
        model = self.current_user
        if model.get("admin") or ADMIN_SCOPE in model.get("scopes", []):
            return True
        users = await self.directory.refresh()
        return bool(users.get(model["name"]) and users[model["name"]].admin)

    async def require_admin(self) -> None:
        if not await self.is_admin():
            raise web.HTTPError(403, "Only admins (or members of a group with the cost admin scope) may do this.")

    async def hub_admins(self) -> set[str]:
        """The hub's admins now (they may use the admin page whatever their groups)."""
        return {n for n, u in (await self.directory.refresh(force=True)).items() if u.admin}

    async def groups_of(self, user: str) -> tuple[str, ...]:
        users = await self.directory.refresh()
        return users[user].groups if user in users else tuple(self.rep.config_groups(user))

    def period_arg(self) -> Period:
        try:
            return self.rep.period(self.get_argument("period", None))
        except ValueError as e:
            raise web.HTTPError(400, str(e)) from None

    def render_page(self, name: str, **kw) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(TEMPLATES.get_template(name).render(
            prefix=self.prefix, hub_prefix=self.settings["hub_prefix"], user=self.current_user,
            xsrf=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token, **kw))

    def write_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(data if isinstance(data, str) else json.dumps(data, indent=1, default=str))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        if self.is_api:
            self.write_json({"status": status_code, "message": message}, status_code)
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(TEMPLATES.get_template("error.html").render(
            prefix=self.prefix, hub_prefix=self.settings["hub_prefix"], status=status_code, message=message))


class NotFound(Base):
    def prepare(self):
        raise web.HTTPError(404, f"no such page: {self.request.path}")
