"""The admin and cost service, a JupyterHub managed service at ``/services/cost/``: its startup.

Started by the hub (``posehub.costservice``, from ``posehub.hub.hubapply.apply_costs``) with its service
token in the environment. Users sign in through JupyterHub OAuth; a user sees only their own spend; hub
admins and holders of the custom scope ``custom:posehub-costs:admin`` see everyone's and run the admin
page. The pages are :mod:`cost_reports.pages`, the REST API :mod:`cost_reports.rest`, what both share
:mod:`cost_reports.web`; what an admin may change, :mod:`cost_reports.admin_actions`. The enforcement loop
(:mod:`cost_reports.enforce`) runs in the same process.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import ioloop, web

from .core import CostReporter
from .enforce import Enforcer
from .gatewayapi import GatewayClient
from .hubapi import HubClient
from .pages import (AdminAccessForm, AdminBudgetForm, AdminCsv, AdminExtensionForm, AdminGroupForm, AdminIdleForm,
                    AdminPage, AdminPlot, UserPage, UserPlot)
from .rest import (AuditApi, BudgetApi, BudgetsApi, ExtensionsApi, GroupApi, GroupMemberApi, GroupsApi, MetricsApi,
                   ProfileAccessApi, ProfileIdleApi, ProfilesApi, ReportApi, StatusApi, UserReportApi)
from .usage import StorageMeter, local_sizer, s3_sizer
from .web import Directory, NotFound

log = logging.getLogger("posehub.cost")


def make_app(reporter: CostReporter, hub: HubClient, prefix: str, hub_prefix: str = "/hub/") -> web.Application:
    directory = Directory(hub)
    p = prefix if prefix.endswith("/") else prefix + "/"
    routes = [
        (p, UserPage),
        (p + "plot.png", UserPlot),
        (p + "admin", AdminPage),
        (p + "admin/budget", AdminBudgetForm),
        (p + "admin/extension", AdminExtensionForm),
        (p + "admin/access", AdminAccessForm),
        (p + "admin/idle", AdminIdleForm),
        (p + "admin/group", AdminGroupForm),
        (p + "admin/report.csv", AdminCsv),
        (p + "admin/plot.png", AdminPlot),
        (p + "api/status", StatusApi),
        (p + r"api/users/([^/]+)/report", UserReportApi),
        (p + "api/report", ReportApi),
        (p + "api/budgets", BudgetsApi),
        (p + r"api/budgets/([^/]+)/([^/]+)", BudgetApi),
        (p + "api/extensions", ExtensionsApi),
        (p + "api/audit", AuditApi),
        (p + "api/profiles", ProfilesApi),
        (p + r"api/profiles/([^/]+)/access", ProfileAccessApi),
        (p + r"api/profiles/([^/]+)/idle", ProfileIdleApi),
        (p + "api/groups", GroupsApi),
        (p + r"api/groups/([^/]+)", GroupApi),
        (p + r"api/groups/([^/]+)/members/([^/]+)", GroupMemberApi),
        (p + "metrics", MetricsApi),
        (p + "oauth_callback", HubOAuthCallbackHandler),
        (r".*", NotFound),
    ]
    return web.Application(routes, reporter=reporter, directory=directory, hub=hub, prefix=p, hub_prefix=hub_prefix,
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
