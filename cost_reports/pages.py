"""The pages of the admin and cost service: my costs (``/``), the admin page (``/admin``: groups and members,
who may use each profile, idle limits, budgets, spend, the log of changes), with its forms, CSV and plots."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from tornado import web

from . import admin_actions as actions
from . import api, plot, render
from .enforce import user_status
from .periods import Period
from .web import Base


class UserPage(Base):
    @web.authenticated
    async def get(self):
        period = self.period_arg()
        who = self.get_argument("user", self.user_name)
        admin = await self.is_admin()
        if who != self.user_name and not admin:
            raise web.HTTPError(403, "You may only see your own costs.")
        groups = await self.groups_of(who)
        report = await asyncio.to_thread(self.rep.user_report, who, groups, period)
        status = await asyncio.to_thread(user_status, self.rep, who, groups)
        self.render_page("user.html", report=report, status=status, admin=admin, who=who,
                         plot_url=f"{self.prefix}plot.png?" + urlencode({"user": who, "period": period.label}),
                         fragment=render.user_html(report))


class UserPlot(Base):
    @web.authenticated
    async def get(self):
        period = self.period_arg()
        who = self.get_argument("user", self.user_name)
        if who != self.user_name and not await self.is_admin():
            raise web.HTTPError(403, "You may only see your own costs.")
        report = await asyncio.to_thread(self.rep.user_report, who, await self.groups_of(who), period)
        self.set_header("Content-Type", "image/png")
        self.finish(await asyncio.to_thread(plot.user_plot, report))


async def _admin_report(handler: Base, period: Period):
    users = await handler.directory.refresh()
    return await asyncio.to_thread(handler.rep.admin_report, period, {u.name: u.groups for u in users.values()})


class AdminPage(Base):
    """The admin page: groups and members, who may use each profile and its idle limit, budgets and spend, and
    the log of every change (admin_actions)."""

    @web.authenticated
    async def get(self, error: str = "", status: int = 200, form: dict | None = None):
        await self.require_admin()
        period = self.period_arg()
        report = await _admin_report(self, period)
        users = await self.directory.refresh()
        hub_groups = await self.settings["hub"].groups()
        groups = sorted(set(hub_groups) | set(self.rep.cfg["groups"]))
        budgets = await asyncio.to_thread(self.rep.budgets.budgets, {u.name: u.groups for u in users.values()})
        audit = await asyncio.to_thread(actions.audit_entries, self.rep)
        views = await asyncio.to_thread(actions.profile_views, self.rep)
        self.set_status(status)
        self.render_page("admin.html", admin=True, report=report, budgets=budgets, groups=groups,
                         audit=list(reversed(audit))[:100], profiles=views,
                         group_views=actions.group_views(self.rep, hub_groups), users=sorted(users),
                         source_rule=actions.SOURCE_RULE, sso=self.rep.cfg["auth"]["type"] == "oidc",
                         error=error, saved=self.get_argument("saved", ""), form=form or {},
                         csv_url=f"{self.prefix}admin/report.csv?period={period.label}",
                         plot_url=f"{self.prefix}admin/plot.png?period={period.label}")

    async def refuse(self, error: str, form: dict):
        """The page again with the sentence, status 400, the form's values kept; nothing was changed."""
        return await self.get(error=error, status=400, form=form)


class AdminForm(AdminPage):
    """A POST from one of the admin page's forms: checked and applied by admin_actions, then back to the page."""

    fields: tuple[str, ...] = ()

    def form(self) -> dict:
        return {k: self.get_body_argument(k, "") for k in self.fields}

    async def act(self, form: dict) -> str:  # returns what was saved, for the page's message
        raise NotImplementedError

    @web.authenticated
    async def post(self):
        await self.require_admin()
        form = self.form()
        try:
            saved = await self.act(form)
        except api.InputError as e:
            return await self.refuse(str(e), form)
        self.redirect(f"{self.prefix}admin?" + urlencode({"saved": saved}))


class AdminAccessForm(AdminForm):
    fields = ("profile", "action", "scope", "name", "reason")

    async def act(self, form):
        c = await actions.change_access(self.rep, self.directory, self.settings["hub"], form["profile"], form["action"],
                                        form["scope"], form["name"].strip(), form["reason"], self.user_name)
        return f"{c.name}: {c.action}"


class AdminIdleForm(AdminForm):
    fields = ("profile", "minutes", "reason", "action")

    async def act(self, form):
        minutes = None if form["action"] == "reset" else form["minutes"]
        c = await actions.change_idle(self.rep, form["profile"], minutes, form["reason"], self.user_name)
        return f"{c.name}: idle limit {c.new}"


class AdminGroupForm(AdminForm):
    fields = ("group", "user", "action", "reason")

    async def act(self, form):
        if form["action"] == "create":
            c = await actions.create_group(self.rep, self.settings["hub"], form["group"].strip(), form["reason"],
                                           self.user_name)
            return f"group {c.name} created"
        if form["action"] not in ("add", "remove"):
            raise api.InputError(f"unknown action {form['action']!r} (expected add, remove or create)")
        c = await actions.change_member(self.rep, self.directory, self.settings["hub"], form["group"],
                                        form["user"].strip(), form["action"] == "add", form["reason"], self.user_name,
                                        await self.hub_admins())
        return f"{c.name}: {c.action}"


class AdminBudgetForm(Base):
    """POST from the admin page's budget form: set or clear a user's or group's budget."""

    @web.authenticated
    async def post(self):
        await self.require_admin()
        form = {k: self.get_body_argument(k, "") for k in ("scope", "name", "amount", "reason", "action")}
        try:
            change = await actions.validate_budget_change(self.rep, self.directory, form["scope"], form["name"],
                                                          None if form["action"] == "clear" else form["amount"],
                                                          form["reason"])
        except api.InputError as e:
            return await AdminPage.get(self, error=str(e), status=400, form=form)
        await asyncio.to_thread(actions.apply_budget_change, self.rep, change, self.user_name)
        self.redirect(f"{self.prefix}admin?saved={change.scope}:{change.name}")


class AdminExtensionForm(Base):
    @web.authenticated
    async def post(self):
        await self.require_admin()
        form = {k: self.get_body_argument(k, "") for k in ("user", "amount", "days", "reason")}
        try:
            ext = await actions.validate_extension(self.rep, self.directory, form)
        except api.InputError as e:
            return await AdminPage.get(self, error=str(e), status=400, form=form)
        await asyncio.to_thread(self.rep.budgets.grant_extension, *ext, self.user_name, form["reason"].strip())
        self.redirect(f"{self.prefix}admin?saved=extension:{ext[0]}")


class AdminCsv(Base):
    @web.authenticated
    async def get(self):
        await self.require_admin()
        period = self.period_arg()
        report = await _admin_report(self, period)
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="posehub-costs-{period.label}.csv"')
        self.finish(render.admin_csv(report))


class AdminPlot(Base):
    @web.authenticated
    async def get(self):
        await self.require_admin()
        report = await _admin_report(self, self.period_arg())
        self.set_header("Content-Type", "image/png")
        self.finish(await asyncio.to_thread(plot.admin_plot, report))
