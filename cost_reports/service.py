"""The cost reporter as a JupyterHub managed service, at ``/services/cost/``.

Started by the hub (see ``posehub.hub.hubapply.apply_costs``) with its service
token in the environment. Users sign in through JupyterHub OAuth; a user sees
only their own spend; hub admins and holders of the custom scope
``custom:posehub-costs:admin`` see everyone's and change budgets.

Pages: ``/`` (my costs), ``/admin`` (everyone, budget edit, CSV, plot).
REST API under ``/api/`` (see README "Cost reporter"). The enforcement loop
(:mod:`cost_reports.enforce`) runs in the same process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web

from . import api, metrics, plot, render
from .core import CostReporter
from .enforce import Enforcer, user_status
from .gatewayapi import GatewayClient
from .hubapi import HubClient, HubUser
from .periods import Period
from .usage import StorageMeter, local_sizer, s3_sizer

log = logging.getLogger("posehub.cost")
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


# ------------------------------------------------------------ pages


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
    @web.authenticated
    async def get(self, error: str = "", status: int = 200, form: dict | None = None):
        await self.require_admin()
        period = self.period_arg()
        report = await _admin_report(self, period)
        users = await self.directory.refresh()
        groups = sorted(self.directory.groups() | set(self.rep.cfg["groups"]))
        budgets = await asyncio.to_thread(self.rep.budgets.budgets, {u.name: u.groups for u in users.values()})
        audit = await asyncio.to_thread(self.rep.budgets.audit_log)
        self.set_status(status)
        self.render_page("admin.html", admin=True, report=report, budgets=budgets, groups=groups, audit=list(reversed(audit))[:50],
                         error=error, saved=self.get_argument("saved", ""), form=form or {},
                         csv_url=f"{self.prefix}admin/report.csv?period={period.label}",
                         plot_url=f"{self.prefix}admin/plot.png?period={period.label}")


class AdminBudgetForm(Base):
    """POST from the admin page's budget form: set or clear a user's or group's budget."""

    @web.authenticated
    async def post(self):
        await self.require_admin()
        form = {k: self.get_body_argument(k, "") for k in ("scope", "name", "amount", "reason", "action")}
        try:
            change = await validate_budget_change(self, form["scope"], form["name"],
                                                  None if form["action"] == "clear" else form["amount"], form["reason"])
        except api.InputError as e:
            return await AdminPage.get(self, error=str(e), status=400, form=form)
        await asyncio.to_thread(apply_budget_change, self.rep, change, self.user_name)
        self.redirect(f"{self.prefix}admin?saved={change.scope}:{change.name}")


class AdminExtensionForm(Base):
    @web.authenticated
    async def post(self):
        await self.require_admin()
        form = {k: self.get_body_argument(k, "") for k in ("user", "amount", "days", "reason")}
        try:
            ext = await validate_extension(self, form)
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


# ------------------------------------------------------------ validation shared by forms and API


async def validate_budget_change(handler: Base, scope: str, name: str, amount, reason: str) -> api.BudgetChange:
    scope = api.scope(scope)
    users = await handler.directory.refresh(force=True)
    known = set(users) | set(handler.rep.cfg["budgets"]["users"]) if scope == "user" else (
        handler.directory.groups() | set(handler.rep.cfg["groups"]))
    name = api.known_name(name, scope, known)
    value = None if amount is None else api.amount(amount, f"budget of {scope} {name!r}")
    if not isinstance(reason, str):
        raise api.InputError("reason must be text")
    return api.BudgetChange(scope, name, value, reason.strip())


def apply_budget_change(rep: CostReporter, change: api.BudgetChange, actor: str):
    entry = rep.budgets.set_budget(change.scope, change.name, change.amount, actor, change.reason)
    log.info("budget: %s set %s %s: %s -> %s (%s)", actor, change.scope, change.name, entry.old, entry.new, change.reason)
    return entry


async def validate_extension(handler: Base, body: dict):
    users = await handler.directory.refresh(force=True)
    user = api.known_name(body.get("user", ""), "user", users)
    amount = api.amount(body.get("amount"), f"extension for user {user!r}", positive=True)
    until = api.extension_end(handler.rep.now(), body.get("days") or None, body.get("until") or None)
    if not str(body.get("reason", "")).strip():
        raise api.InputError("reason is needed for an extension (it goes in the audit log)")
    return user, amount, until


# ------------------------------------------------------------ REST API


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
            change = await validate_budget_change(self, scope, name, body.get("amount"), body.get("reason", ""))
            if change.amount is None:
                raise api.InputError("amount is missing: give an amount in US dollars, e.g. 250")
        except api.InputError as e:
            raise web.HTTPError(400, str(e)) from None
        entry = await asyncio.to_thread(apply_budget_change, self.rep, change, self.user_name)
        self.write_json(audit_dict(entry))

    @web.authenticated
    async def delete(self, scope: str, name: str):
        await self.require_admin()
        try:
            change = await validate_budget_change(self, scope, name, None, self.get_argument("reason", ""))
        except api.InputError as e:
            raise web.HTTPError(400, str(e)) from None
        entry = await asyncio.to_thread(apply_budget_change, self.rep, change, self.user_name)
        self.write_json(audit_dict(entry))


class ExtensionsApi(Base):
    @web.authenticated
    async def post(self):
        await self.require_admin()
        try:
            body = api.json_body(self.request.body)
            api.check_fields(body, ("user", "amount", "days", "until", "reason"))
            user, amount, until = await validate_extension(self, body)
        except api.InputError as e:
            raise web.HTTPError(400, str(e)) from None
        ext = await asyncio.to_thread(self.rep.budgets.grant_extension, user, amount, until, self.user_name,
                                      str(body["reason"]).strip())
        self.write_json({"user": ext.user, "amount": f"{ext.amount:.2f}", "granted_at": ext.granted_at.isoformat(),
                         "until": ext.until.isoformat(), "granted_by": ext.granted_by, "reason": ext.reason}, 201)


class AuditApi(Base):
    @web.authenticated
    async def get(self):
        await self.require_admin()
        entries = await asyncio.to_thread(self.rep.budgets.audit_log, self.get_argument("name", None))
        self.write_json({"entries": [audit_dict(e) for e in entries]})


def audit_dict(e) -> dict:
    return {"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "scope": e.scope, "name": e.name,
            "old": None if e.old is None else f"{e.old:.2f}", "new": None if e.new is None else f"{e.new:.2f}",
            "reason": e.reason}


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


class NotFound(Base):
    def prepare(self):
        raise web.HTTPError(404, f"no such page: {self.request.path}")


# ------------------------------------------------------------ the application


def make_app(reporter: CostReporter, hub: HubClient, prefix: str, hub_prefix: str = "/hub/") -> web.Application:
    directory = Directory(hub)
    p = prefix if prefix.endswith("/") else prefix + "/"
    routes = [
        (p, UserPage),
        (p + "plot.png", UserPlot),
        (p + "admin", AdminPage),
        (p + "admin/budget", AdminBudgetForm),
        (p + "admin/extension", AdminExtensionForm),
        (p + "admin/report.csv", AdminCsv),
        (p + "admin/plot.png", AdminPlot),
        (p + "api/status", StatusApi),
        (p + r"api/users/([^/]+)/report", UserReportApi),
        (p + "api/report", ReportApi),
        (p + "api/budgets", BudgetsApi),
        (p + r"api/budgets/([^/]+)/([^/]+)", BudgetApi),
        (p + "api/extensions", ExtensionsApi),
        (p + "api/audit", AuditApi),
        (p + "metrics", MetricsApi),
        (p + "oauth_callback", HubOAuthCallbackHandler),
        (r".*", NotFound),
    ]
    return web.Application(routes, reporter=reporter, directory=directory, prefix=p, hub_prefix=hub_prefix,
                           stops={"server": 0, "dask-cluster": 0},
                           cookie_secret=os.urandom(32), xsrf_cookies=False)


@dataclass
class Prepared:
    """What :func:`prepare` loaded (in any thread): the config and the ledger."""

    cfg: object
    reporter: CostReporter
    gateway_url: str | None = None  # Dask Gateway's API, where clusters over budget are stopped


def prepare(load_config) -> Prepared | None:
    """The slow half of starting: config (``load_config()``: the config and the gateway's URL), ledger
    tables. Safe off the event loop. None (with a message on stderr) when the config cannot be used."""
    from .launch import CannotStart

    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s posehub.cost] %(message)s")
    try:
        cfg, gateway_url = load_config()
    except CannotStart as e:
        print(f"cost service cannot start: {e}", file=sys.stderr)
        return None
    cfg.state_dir.mkdir(parents=True, exist_ok=True)  # the SQLite ledger's folder
    return Prepared(cfg, CostReporter(cfg), gateway_url)


def home_sizer(cfg):
    """How the space of each user's home prefix is measured: the disk its folder takes (``backend: local``),
    or its objects' sizes, listed with the hub's own keys (``s3``)."""
    b = cfg["buckets"]
    home = b.get("home")
    if not home:
        return None
    if b["backend"] == "local":
        return local_sizer(cfg.data_dir / "buckets" / home["name"])
    import boto3

    keys = {}
    if b["hub_keys_file"]:
        key, _, secret = Path(cfg.resolve(b["hub_keys_file"])).read_text().strip().partition(":")
        keys = {"aws_access_key_id": key.strip(), "aws_secret_access_key": secret.strip()}
    endpoint = home.get("endpoint_url") or b["endpoint_url"] or None
    client = boto3.session.Session(region_name=home.get("region") or b["region"], **keys).client(
        "s3", endpoint_url=endpoint)
    return s3_sizer(client, home["name"])


class Started:
    """The service on the event loop: the application and its enforcement loop."""

    def __init__(self, prepared: Prepared):
        cfg, reporter = prepared.cfg, prepared.reporter
        self.cfg = cfg
        self.reporter = reporter
        self.hub = HubClient()
        self.prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/cost/")
        self.app = make_app(reporter, self.hub, self.prefix, os.environ.get("JUPYTERHUB_BASE_URL", "/") + "hub/")
        meter = None
        sizer = home_sizer(cfg)
        if sizer is not None:
            meter = StorageMeter(reporter.ledger, sizer, cfg["costs"]["storage_price_per_gb_month"])
        gateway = GatewayClient(prepared.gateway_url) if prepared.gateway_url else None
        self.enforcer = Enforcer(reporter, self.hub, meter, gateway)

    async def round(self):
        directory: Directory = self.app.settings["directory"]
        try:
            result = await self.enforcer.tick()
            stops = self.app.settings["stops"]
            stops["server"] += len(result.stopped)
            stops["dask-cluster"] += len(result.stopped_clusters)
            directory.set(await self.hub.users())
            if result.stopped or result.warned:
                log.info("enforcement: warned %s, stopped %s", result.warned, result.stopped)
        except Exception:  # noqa: BLE001 - keep the loop alive, log and retry next round
            log.exception("enforcement round failed")

    def start(self) -> None:
        """Start the enforcement loop (every ``costs.check_interval_seconds``)."""
        interval_ms = float(self.cfg["costs"]["check_interval_seconds"]) * 1000
        ioloop.IOLoop.current().add_callback(self.round)
        ioloop.PeriodicCallback(self.round, interval_ms).start()
        where = os.environ.get("JUPYTERHUB_SERVICE_URL") or f"http://127.0.0.1:{self.cfg['costs']['port']}"
        log.info("cost service at %s%s, ledger %s, checks every %ss", where.rstrip("/"), self.prefix, self.reporter.db.engine.url.render_as_string(hide_password=True),
                 self.cfg["costs"]["check_interval_seconds"])
