"""The watch service, a JupyterHub managed service at ``/services/watch/``: watched folders.

``python -m posehub.watch.service`` (started by the hub, :func:`posehub.hub.hubapply.watch_service`).
Every ``watch.poll_seconds`` it lists each active watch's prefix (:mod:`~.sources`), records the new
videos (:mod:`~.store`: each (key, ETag) once, so a copy of the same video or a restart never
analyses it twice) and runs up to ``watch.max_running`` of them (:mod:`~.runner`), each as its owner on
the owner's Dask Gateway cluster, charged to the owner like any cluster. Before listing, and before each
video, the owner's budget is checked with the same rule as a server start (the worker profile's minimum
block must fit): a watch whose owner is over budget is paused, with a notice on the owner's hub page,
and stays paused until they resume it.

Pages and API (JupyterHub OAuth; a user sees and changes only their own watches, hub admins and holders
of the cost admin scope everyone's):

* ``GET /services/watch/``: the page (list, pause/resume/delete, a form to add one);
* ``GET|POST api/watches``, ``GET api/watches/<id>/items``, ``POST api/watches/<id>/pause|resume``,
  ``DELETE api/watches/<id>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from cost_reports.web import Base as CostBase
from cost_reports.web import Directory
from cost_reports.web import NotFound as CostNotFound
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import ioloop, web

from ..config import PoseHubConfig
from ..gateway import policy as gateway_policy
from ..hub import isolation
from ..hub.costs import CostGate
from . import policy, runner, sources
from .store import ACTIVE, DONE, FAILED, PAUSED, QUEUED, WatchRecord, WatchStore

log = logging.getLogger("posehub.watch")
TEMPLATES = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
                        autoescape=select_autoescape(["html"]))
MAX_ATTEMPTS = 3


def _finite(x):
    return x if not isinstance(x, float) or math.isfinite(x) else None


class Watcher:
    """The polling loop and the jobs it runs."""

    def __init__(self, cfg: PoseHubConfig, gate: CostGate, store: WatchStore, hub):
        self.cfg, self.gate, self.store, self.hub = cfg, gate, store, hub
        self.running: dict[int, asyncio.Task] = {}
        self.users: dict = {}

    # ------------------------------------------------------------ the owner's side

    def offered(self, user) -> dict[str, str]:
        """Worker profiles the user may use, with admins' run-time settings, as the gateway offers them."""
        return {p["slug"]: p["display_name"] for p in gateway_policy.worker_profiles(
            self.cfg, user.name, user.groups, user.admin, self.gate.reporter.profiles())}

    def budget_refusal(self, watch: WatchRecord, groups) -> str:
        profile = next((p for p in self.gate.reporter.profiles() if p["slug"] == watch.profile), None)
        if profile is None:
            return f"its worker profile '{watch.profile}' no longer exists."
        check = self.gate.precheck(watch.owner, groups, profile)
        return "" if check.ok else check.message

    def pause(self, watch: WatchRecord, why: str, notice: bool = True) -> None:
        self.store.set_state(watch.id, PAUSED, why)
        log.info("watch %s of %s paused: %s", watch.id, watch.owner, why)
        if notice:
            period = self.gate.reporter.period().label
            self.gate.notices.add_once(watch.owner, period, f"watch-{watch.id}",
                                       policy.pause_notice(watch.id, watch.bucket, watch.prefix, why))

    def resume(self, watch: WatchRecord) -> WatchRecord:
        self.store.set_state(watch.id, ACTIVE, "")
        self.gate.notices.clear(watch.owner, self.gate.reporter.period().label, f"watch-{watch.id}")
        return self.store.get(watch.id)

    # ------------------------------------------------------------ one round

    def scan(self, watch: WatchRecord, groups) -> int:
        """List the watch's prefix and record what is new; how many (blocking: runs off the loop)."""
        w = self.cfg["watch"]
        suffixes = w["video_suffixes"]
        if self.cfg["buckets"]["backend"] == "local":
            folder = sources.local_folder(self.cfg, watch.owner, groups, watch.bucket)
            found = sources.list_local(folder, watch.prefix, self.store.stats(watch.id), suffixes)
        else:
            acc = sources.access(self.cfg, watch.owner, groups, watch.bucket)
            found = sources.list_s3(sources.s3_client(self.cfg, watch.owner, acc), acc, watch.prefix, suffixes)
        new = policy.to_queue(found, self.store.known(watch.id), now=time.time(),
                              settle_seconds=w["settle_seconds"], suffixes=suffixes)
        added = [f for f in new if self.store.enqueue(watch.id, f) is not None]
        for f in added:
            log.info("watch %s of %s: new video %s (%s)", watch.id, watch.owner, f.key, f.etag)
        return len(added)

    async def round(self) -> None:
        loop = asyncio.get_running_loop()
        self.users = {u.name: u for u in await self.hub.users()}
        for watch in await loop.run_in_executor(None, lambda: self.store.watches(state=ACTIVE)):
            user = self.users.get(watch.owner)
            try:
                if user is None:
                    await loop.run_in_executor(None, self.pause, watch, "its owner is no longer a user.", False)
                    continue
                why = await loop.run_in_executor(None, self.budget_refusal, watch, user.groups)
                if why:
                    await loop.run_in_executor(None, self.pause, watch, why)
                    continue
                await loop.run_in_executor(None, self.scan, watch, user.groups)
            except sources.SourceError as e:
                log.warning("watch %s of %s: %s", watch.id, watch.owner, e)
            except Exception:  # noqa: BLE001 - one watch's trouble must not stop the others
                log.exception("watch %s of %s failed this round", watch.id, watch.owner)
        await self.start_queued()

    async def start_queued(self) -> None:
        loop = asyncio.get_running_loop()
        free = self.cfg["watch"]["max_running"] - len(self.running)
        if free <= 0:
            return
        active = {w.id: w for w in await loop.run_in_executor(None, lambda: self.store.watches(state=ACTIVE))}
        for item in await loop.run_in_executor(None, lambda: self.store.items(state=QUEUED)):
            if free <= 0:
                break
            watch = active.get(item.watch_id)
            if watch is None or item.id in self.running or watch.owner not in self.users:
                continue
            free -= 1
            self.running[item.id] = asyncio.ensure_future(self.run_item(watch, item))

    async def run_item(self, watch: WatchRecord, item) -> None:
        loop = asyncio.get_running_loop()
        user = self.users[watch.owner]
        token_id = None
        try:
            why = await loop.run_in_executor(None, self.budget_refusal, watch, user.groups)
            if why:
                await loop.run_in_executor(None, self.pause, watch, why)
                return
            await loop.run_in_executor(None, self.store.started, item.id)
            home = isolation.home_of(self.cfg, watch.owner)
            spec = await loop.run_in_executor(None, runner.job_spec, self.cfg, watch, item, user.groups, home)
            if self.cfg["buckets"]["backend"] != "local":
                spec["credentials"] = await loop.run_in_executor(None, runner.credentials, self.cfg, watch,
                                                                 user.groups)
            spec["stale_clusters"] = list(item.result.get("clusters", []))
            timeout = float(self.cfg["watch"]["job_timeout_seconds"])
            token_id, spec["token"] = await self.hub.new_token(
                watch.owner, runner.token_scopes(), int(timeout) + 600, f"posehub watch {watch.id}, video {item.id}")
            log.info("watch %s of %s: analysing %s", watch.id, watch.owner, item.key)
            result = await runner.run_job(self.cfg, spec, runner.python_of(self.cfg, watch.profile), watch.owner,
                                          timeout, lambda name: self.store.note_cluster(item.id, name))
        except sources.SourceError as e:
            result = {"state": "refused", "error": str(e)}
        except Exception as e:  # noqa: BLE001 - recorded on the item, the loop goes on
            log.exception("watch %s item %s", watch.id, item.id)
            result = {"state": "failed", "error": f"{type(e).__name__}: {e}"}
        finally:
            self.running.pop(item.id, None)
            if token_id is not None:
                try:
                    await self.hub.delete_token(watch.owner, token_id)
                except Exception:  # noqa: BLE001 - it expires anyway
                    log.warning("token %s of %s not deleted", token_id, watch.owner)
        state, error = result.get("state"), result.get("error", "")
        if state == "refused":  # no cluster now (budget, GPUs, the owner's cluster limit): the video waits
            await loop.run_in_executor(None, lambda: self.store.finished(item.id, QUEUED, error,
                                                                         count_attempt=False))
            why = await loop.run_in_executor(None, self.budget_refusal, watch, user.groups)
            if why:
                await loop.run_in_executor(None, self.pause, watch, why)
        elif state != "done" and result.get("retry") and item.attempts + 1 < MAX_ATTEMPTS:  # its process died
            await loop.run_in_executor(None, lambda: self.store.finished(item.id, QUEUED, error))
        else:
            final = DONE if state == "done" else FAILED
            await loop.run_in_executor(None, lambda: self.store.finished(
                item.id, final, error, {k: _finite(v) for k, v in result.items() if k not in ("state", "error", "retry")}))
        log.info("watch %s of %s: %s %s %s", watch.id, watch.owner, item.key, state, error)

    def view(self, watch: WatchRecord) -> dict:
        return {"id": watch.id, "owner": watch.owner, "bucket": watch.bucket, "prefix": watch.prefix,
                "model": "~/" + watch.model, "profile": watch.profile, "out_bucket": watch.out_bucket,
                "out_prefix": watch.out_prefix, "state": watch.state, "reason": watch.reason,
                "created": watch.created.isoformat(), "created_by": watch.created_by,
                "counts": self.store.counts(watch.id)}


# ---------------------------------------------------------------- pages and API


class Base(CostBase):
    """The cost service's handler base (JupyterHub OAuth, XSRF on forms, admins, JSON and error pages)."""

    @property
    def watcher(self) -> Watcher:
        return self.settings["watcher"]

    async def fresh_users(self) -> dict:
        users = await self.directory.refresh(force=True)
        self.watcher.users = dict(users)
        return users

    async def watch_for(self, watch_id: str, write: bool) -> WatchRecord:
        watch = self.watcher.store.get(int(watch_id))
        if watch is None or (watch.owner != self.user_name and not await self.is_admin()):
            raise web.HTTPError(404, f"no watch #{watch_id} of yours")
        return watch

    async def create(self, body: dict) -> WatchRecord:
        body = dict(body)
        owner = body.pop("owner", None) or self.user_name
        if owner != self.user_name and not await self.is_admin():
            raise web.HTTPError(403, "Only admins may declare a watch for another user.")
        user = (await self.fresh_users()).get(owner)
        if user is None:
            raise web.HTTPError(400, f"no user {owner!r}")
        cfg = self.watcher.cfg
        try:
            spec = policy.check_spec(body, sources.user_buckets(cfg, owner, user.groups), self.watcher.offered(user))
            if cfg["buckets"]["backend"] != "local":
                for name in {spec.bucket, spec.out_bucket}:
                    if not sources.access(cfg, owner, user.groups, name).uses_sts:
                        raise policy.WatchRefused(f"bucket {name!r} is reached through its mount only (static keys "
                                                  "kept by the hub): it cannot be watched")
        except policy.WatchRefused as e:
            raise web.HTTPError(400, str(e)) from None
        watch = self.watcher.store.add(owner, spec, self.user_name)
        log.info("%s declared watch %s for %s: %s/%s -> %s/%s", self.user_name, watch.id, owner, spec.bucket,
                 spec.prefix, spec.out_bucket, spec.out_prefix)
        why = self.watcher.budget_refusal(watch, user.groups)
        if why:
            self.watcher.pause(watch, why)
        return self.watcher.store.get(watch.id)

    async def change(self, watch: WatchRecord, action: str) -> WatchRecord:
        if action == "pause":
            self.watcher.store.set_state(watch.id, PAUSED, f"paused by {self.user_name}")
            return self.watcher.store.get(watch.id)
        if action == "resume":
            user = (await self.fresh_users()).get(watch.owner)
            why = self.watcher.budget_refusal(watch, user.groups if user else ())
            if why:
                raise web.HTTPError(409, f"Not resumed: {why}")
            return self.watcher.resume(watch)
        raise web.HTTPError(404, f"no action {action!r}")

    def render_watches(self, **kw) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        xsrf = self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token
        self.finish(TEMPLATES.get_template("watches.html").render(
            prefix=self.prefix, hub_prefix=self.settings["hub_prefix"], user=self.current_user, xsrf=xsrf, **kw))


class WatchesApi(Base):
    @web.authenticated
    async def get(self):
        everyone = self.get_argument("all", "") == "1" and await self.is_admin()
        watches = self.watcher.store.watches(None if everyone else self.user_name)
        self.write_json({"watches": [self.watcher.view(w) for w in watches]})

    @web.authenticated
    async def post(self):
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "send a JSON object with bucket, prefix, model, profile and out_prefix")
        self.write_json(self.watcher.view(await self.create(body)), 201)


class WatchApi(Base):
    @web.authenticated
    async def delete(self, watch_id):
        watch = await self.watch_for(watch_id, True)
        self.watcher.store.delete(watch.id)
        self.write_json({"deleted": watch.id})


class WatchActionApi(Base):
    @web.authenticated
    async def post(self, watch_id, action):
        self.write_json(self.watcher.view(await self.change(await self.watch_for(watch_id, True), action)))


class ItemsApi(Base):
    @web.authenticated
    async def get(self, watch_id):
        watch = await self.watch_for(watch_id, False)
        self.write_json({"items": [i.view() for i in self.watcher.store.items(watch.id)]})


class Page(Base):
    @web.authenticated
    async def get(self):
        admin = await self.is_admin()
        watches = self.watcher.store.watches(None if admin else self.user_name)
        items = {w.id: self.watcher.store.items(w.id)[-10:] for w in watches}
        user = (await self.fresh_users()).get(self.user_name)
        buckets = sources.user_buckets(self.watcher.cfg, self.user_name, user.groups) if user else []
        profiles = self.watcher.offered(user) if user else {}
        self.render_watches(watches=[self.watcher.view(w) for w in watches], items=items, admin=admin,
                            buckets=buckets, profiles=profiles, message=self.get_argument("message", ""))


class FormCreate(Base):
    @web.authenticated
    async def post(self):
        body = {f: self.get_body_argument(f, "") for f in policy.FIELDS}
        body = {k: v for k, v in body.items() if v or k in ("prefix",)}
        try:
            watch = await self.create(body)
            msg = f"Watch #{watch.id} added."
        except web.HTTPError as e:
            msg = e.log_message
        self.redirect(self.prefix + "?" + _q(msg))


class FormAction(Base):
    @web.authenticated
    async def post(self, watch_id, action):
        try:
            watch = await self.watch_for(watch_id, True)
            if action == "delete":
                self.watcher.store.delete(watch.id)
                msg = f"Watch #{watch.id} deleted."
            else:
                w = await self.change(watch, action)
                msg = f"Watch #{w.id} is {w.state}."
        except web.HTTPError as e:
            msg = e.log_message
        self.redirect(self.prefix + "?" + _q(msg))


def _q(message: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"message": message})


def make_app(watcher: Watcher, prefix: str, hub_prefix: str) -> web.Application:
    p = prefix if prefix.endswith("/") else prefix + "/"
    routes = [
        (p, Page),
        (p + "form/create", FormCreate),
        (p + r"form/(\d+)/(pause|resume|delete)", FormAction),
        (p + "api/watches", WatchesApi),
        (p + r"api/watches/(\d+)", WatchApi),
        (p + r"api/watches/(\d+)/(pause|resume)", WatchActionApi),
        (p + r"api/watches/(\d+)/items", ItemsApi),
        (p + "oauth_callback", HubOAuthCallbackHandler),
        (r".*", CostNotFound),
    ]
    return web.Application(routes, watcher=watcher, directory=Directory(watcher.hub), reporter=watcher.gate.reporter,
                           prefix=p, hub_prefix=hub_prefix, cookie_secret=os.urandom(32), xsrf_cookies=False)


class Started:
    def __init__(self, cfg: PoseHubConfig):
        from cost_reports.hubapi import HubClient

        self.cfg = cfg
        gate = CostGate(cfg)
        store = WatchStore(gate.db)
        requeued = store.requeue_running()
        if requeued:
            log.info("%d video(s) whose analysis the last run of this service left unfinished: queued again",
                     requeued)
        self.watcher = Watcher(cfg, gate, store, HubClient())
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/watch/")
        self.app = make_app(self.watcher, prefix, os.environ.get("JUPYTERHUB_BASE_URL", "/") + "hub/")

    async def round(self):
        try:
            await self.watcher.round()
        except Exception:  # noqa: BLE001 - keep polling
            log.exception("watch round failed")

    def start(self) -> None:
        ioloop.IOLoop.current().add_callback(self.round)
        ioloop.PeriodicCallback(self.round, float(self.cfg["watch"]["poll_seconds"]) * 1000).start()
        log.info("watch service: every %ss, at most %s analyses at once", self.cfg["watch"]["poll_seconds"],
                 self.cfg["watch"]["max_running"])


def build(load_config):
    from cost_reports.launch import CannotStart

    logging.basicConfig(level=logging.INFO, format="[%(levelname).1s %(asctime)s posehub.watch] %(message)s")
    try:
        cfg, _ = load_config()
    except CannotStart as e:
        print(f"watch service cannot start: {e}", file=sys.stderr)
        return None
    return Started(cfg)


def main() -> int:
    from cost_reports.launch import main as launch

    from ..costservice import load_config

    return launch(load_config, build, "watch")


if __name__ == "__main__":
    sys.exit(main())
