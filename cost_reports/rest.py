"""The REST API of the admin and cost service, under ``/services/cost/api/`` (see README "Admin and cost API").

Callers sign in with a JupyterHub API token; everything but a user's own status and report needs the hub's
admin flag or the scope ``custom:posehub-costs:admin``. Changes are checked and logged by
:mod:`cost_reports.admin_actions`, the same as the admin page's forms.
"""

from __future__ import annotations

import asyncio

from tornado import web

from . import admin_actions as actions
from . import api, metrics, render
from .enforce import user_status
from .pages import _admin_report
from .web import Base


class StatusApi(Base):
    """My budget status; JupyterLab's budget extension fetches it with the browser's cookie."""

    def check_xsrf_cookie(self):
        # A read-only answer about the signed-in user: other origins cannot read it (no CORS
        # headers), so a same-origin fetch from JupyterLab may use the cookie without an xsrf token.
        if self.request.method in ("GET", "HEAD"):
            return
        return super().check_xsrf_cookie()

    @web.authenticated
    async def get(self):
        who = self.get_argument("user", self.user_name)
        if who != self.user_name and not await self.is_admin():
            raise web.HTTPError(403, "You may only see your own costs.")
        self.write_json(await asyncio.to_thread(user_status, self.rep, who, await self.groups_of(who)))


class UserReportApi(Base):
    @web.authenticated
    async def get(self, who: str):
        if who != self.user_name and not await self.is_admin():
            raise web.HTTPError(403, "You may only see your own costs.")
        users = await self.directory.refresh()
        if who not in users:  # perhaps new since the last refresh
            users = await self.directory.refresh(force=True)
        if who not in users:
            raise web.HTTPError(400, f"unknown user {who!r}")
        period = self.period_arg()
        report = await asyncio.to_thread(self.rep.user_report, who, users[who].groups, period)
        fmt = self.get_argument("format", "json")
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            return self.finish(render.user_csv(report))
        if fmt != "json":
            raise web.HTTPError(400, f"unknown format {fmt!r} (expected json or csv)")
        self.write_json(render.user_json(report))


class ReportApi(Base):
    @web.authenticated
    async def get(self):
        await self.require_admin()
        period = self.period_arg()
        fmt = self.get_argument("format", "json")
        if fmt not in ("json", "csv", "html"):
            raise web.HTTPError(400, f"unknown format {fmt!r} (expected json, csv or html)")
        report = await _admin_report(self, period)
        if fmt == "json":
            return self.write_json(render.admin_json(report))
        self.set_header("Content-Type", "text/csv; charset=utf-8" if fmt == "csv" else "text/html; charset=utf-8")
        self.finish(render.admin_csv(report) if fmt == "csv" else render.admin_html(report))


class BudgetsApi(Base):
    @web.authenticated
    async def get(self):
        await self.require_admin()
        users = await self.directory.refresh()
        budgets = await asyncio.to_thread(self.rep.budgets.budgets, {u.name: u.groups for u in users.values()})
        overrides = await asyncio.to_thread(self.rep.budgets.overrides)
        self.write_json({
            "period": self.rep.policy.period,
            "default": f"{self.rep.policy.default:.2f}",
            "users": {u: {"budget": f"{b.total:.2f}", "base": f"{b.base:.2f}", "source": b.source,
                          "extensions": f"{b.extensions:.2f}"} for u, b in budgets.items()},
            "overrides": {"users": {k: f"{v:.2f}" for k, v in overrides.users.items()},
                          "groups": {k: f"{v:.2f}" for k, v in overrides.groups.items()}},
        })


class BudgetApi(Base):
    @web.authenticated
    async def put(self, scope: str, name: str):
        await self.require_admin()
        try:
            body = api.json_body(self.request.body)
            api.check_fields(body, ("amount", "reason"))
            change = await actions.validate_budget_change(self.rep, self.directory, scope, name, body.get("amount"),
                                                          body.get("reason", ""))
            if change.amount is None:
                raise api.InputError("amount is missing: give an amount in US dollars, e.g. 250")
        except api.InputError as e:
            raise web.HTTPError(400, str(e)) from None
        entry = await asyncio.to_thread(actions.apply_budget_change, self.rep, change, self.user_name)
        self.write_json(actions.audit_dict(entry))

    @web.authenticated
    async def delete(self, scope: str, name: str):
        await self.require_admin()
        try:
            change = await actions.validate_budget_change(self.rep, self.directory, scope, name, None,
                                                          self.get_argument("reason", ""))
        except api.InputError as e:
            raise web.HTTPError(400, str(e)) from None
        entry = await asyncio.to_thread(actions.apply_budget_change, self.rep, change, self.user_name)
        self.write_json(actions.audit_dict(entry))


class ExtensionsApi(Base):
    @web.authenticated
    async def post(self):
        await self.require_admin()
        try:
            body = api.json_body(self.request.body)
            api.check_fields(body, ("user", "amount", "days", "until", "reason"))
            user, amount, until = await actions.validate_extension(self.rep, self.directory, body)
        except api.InputError as e:
            raise web.HTTPError(400, str(e)) from None
        ext = await asyncio.to_thread(self.rep.budgets.grant_extension, user, amount, until, self.user_name,
                                      str(body["reason"]).strip())
        self.write_json({"user": ext.user, "amount": f"{ext.amount:.2f}", "granted_at": ext.granted_at.isoformat(),
                         "until": ext.until.isoformat(), "granted_by": ext.granted_by, "reason": ext.reason}, 201)


class AuditApi(Base):
    """Every change made by admins (budgets, profiles, groups), oldest first; ``?name=`` narrows it."""

    @web.authenticated
    async def get(self):
        await self.require_admin()
        entries = await asyncio.to_thread(actions.audit_entries, self.rep, self.get_argument("name", None))
        self.write_json({"entries": entries})


class JsonApi(Base):
    """An admin endpoint whose bad input is a 400 with a sentence (api.InputError), nothing changed."""

    def body(self, fields) -> dict:
        try:
            body = api.json_body(self.request.body)
            api.check_fields(body, fields)
        except api.InputError as e:
            raise web.HTTPError(400, str(e)) from None
        return body

    async def run(self, change, status: int = 200):
        try:
            c = await change
        except api.InputError as e:
            raise web.HTTPError(400, str(e)) from None
        self.write_json(actions.change_dict(c), status)


class ProfilesApi(Base):
    """``GET /api/profiles``: every profile, who may use it, its idle limit, and where each comes from."""

    @web.authenticated
    async def get(self):
        await self.require_admin()
        views = await asyncio.to_thread(actions.profile_views, self.rep)
        self.write_json({"rule": actions.SOURCE_RULE, "profiles": [v.as_json() for v in views]})


class ProfileAccessApi(JsonApi):
    """``POST /api/profiles/<slug>/access`` ``{"action": "allow"|"remove"|"restrict"|"open"|"reset",
    "scope": "user"|"group", "name": ..., "reason": ...}``."""

    @web.authenticated
    async def post(self, slug: str):
        await self.require_admin()
        b = self.body(("action", "scope", "name", "reason"))
        name = b.get("name", "")
        if not isinstance(name, str):
            raise web.HTTPError(400, "name must be text")
        await self.run(actions.change_access(self.rep, self.directory, self.settings["hub"], slug, b.get("action", ""),
                                             b.get("scope", ""), name.strip(), b.get("reason", ""), self.user_name))


class ProfileIdleApi(JsonApi):
    """``PUT /api/profiles/<slug>/idle`` ``{"minutes": 30, "reason": ...}``; ``DELETE`` (``?reason=``) resets it."""

    @web.authenticated
    async def put(self, slug: str):
        await self.require_admin()
        b = self.body(("minutes", "reason"))
        if b.get("minutes") is None:
            raise web.HTTPError(400, "minutes is missing: give the idle limit in minutes, e.g. 30")
        await self.run(actions.change_idle(self.rep, slug, b["minutes"], b.get("reason", ""), self.user_name))

    @web.authenticated
    async def delete(self, slug: str):
        await self.require_admin()
        await self.run(actions.change_idle(self.rep, slug, None, self.get_argument("reason", ""), self.user_name))


class GroupsApi(Base):
    """``GET /api/groups``: groups and members (each marked posehub.yaml or admin page)."""

    @web.authenticated
    async def get(self):
        await self.require_admin()
        self.write_json({"rule": actions.SOURCE_RULE,
                         "groups": actions.group_views(self.rep, await self.settings["hub"].groups())})


class GroupApi(JsonApi):
    """``PUT /api/groups/<name>`` ``{"reason": ...}`` creates a group."""

    @web.authenticated
    async def put(self, group: str):
        await self.require_admin()
        b = self.body(("reason",))
        await self.run(actions.create_group(self.rep, self.settings["hub"], group, b.get("reason", ""), self.user_name),
                       201)


class GroupMemberApi(JsonApi):
    """``PUT /api/groups/<group>/members/<user>`` adds, ``DELETE`` removes (``{"reason": ...}`` or ``?reason=``)."""

    async def _change(self, group: str, user: str, add: bool, reason):
        await self.require_admin()
        await self.run(actions.change_member(self.rep, self.directory, self.settings["hub"], group, user, add, reason,
                                             self.user_name, await self.hub_admins()))

    @web.authenticated
    async def put(self, group: str, user: str):
        await self._change(group, user, True, self.body(("reason",)).get("reason", ""))

    @web.authenticated
    async def delete(self, group: str, user: str):
        await self._change(group, user, False, self.get_argument("reason", ""))


class MetricsApi(Base):
    """Prometheus metrics (cost_reports.metrics). Scraped with a hub API token that has JupyterHub's
    ``read:metrics`` scope (or the cost admin scope, or an admin's)."""

    @web.authenticated
    async def get(self):
        if "read:metrics" not in self.current_user.get("scopes", []):
            await self.require_admin()
        users = await self.directory.refresh()
        snap = await asyncio.to_thread(metrics.snapshot, self.rep, {n: list(u.groups) for n, u in users.items()},
                                       self.settings["stops"])
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(metrics.render(snap))
