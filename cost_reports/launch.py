"""Start the cost service so that the hub sees it answer at once.

JupyterHub gives a managed service about ten seconds to answer HTTP, then
stops the whole hub. Loading the service (JupyterHub's OAuth client,
SQLAlchemy, matplotlib, the ledger's tables) can take longer than that on a
busy two-core machine. So this module, which imports only tornado, binds the
port first, answers the hub's first check with ``425 Too Early``, then loads
the service and hands the same port to it. If loading fails, the process exits
with the error, so the hub's log shows it. When the hub dies without
stopping it (killed outright), the service exits too, so that the next hub
starts its own.

The config comes from the caller (``load``): the hub's command is ``python -m posehub.costservice``,
which hands PoseHub's config to :func:`main`; nothing in ``cost_reports`` imports ``posehub``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlparse

from tornado import httpserver, ioloop, web


class CannotStart(Exception):
    """The service's config cannot be used; the message says why (``load`` raises it)."""


class Starting(web.RequestHandler):
    """Until the service is loaded: 425 Too Early (the hub counts any answer under 500 as "up";
    a 5xx would make it wait on), with a page that reloads itself."""

    def prepare(self):
        self.set_status(425)
        self.set_header("Retry-After", "2")
        self.finish('<!doctype html><meta http-equiv="refresh" content="2"><title>Starting</title>'
                    f"<p>The {self.settings['name']} service is starting; this page reloads in a moment.</p>\n")

    def on_finish(self):
        self.settings["answered"].set()


def service_port(environ=os.environ) -> int:
    """The port the hub gave the service (``JUPYTERHUB_SERVICE_URL``)."""
    url = environ.get("JUPYTERHUB_SERVICE_URL", "")
    port = urlparse(url).port
    if not port:
        raise SystemExit(f"cost service: JUPYTERHUB_SERVICE_URL has no port ({url!r}); the hub starts this service")
    return port


def listen_host(environ=os.environ) -> str:
    """Loopback when the hub reaches the service on loopback (one machine); every interface when it
    names another host (the hub pod of the Kubernetes deployment: ``http://hub:8010``)."""
    host = urlparse(environ.get("JUPYTERHUB_SERVICE_URL", "")).hostname or "127.0.0.1"
    return "127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0"


def main(load_config, build=None, name: str = "cost") -> int:
    """``load_config()``: ``(config, Dask Gateway URL or None)``; it may raise :class:`CannotStart`.
    ``build(load_config)``: another service started the same way (an object with ``app`` and ``start()``,
    or None when it cannot start, having said why); default the cost service."""
    port = service_port()
    answered = asyncio.Event()
    server = httpserver.HTTPServer(web.Application([(r".*", Starting)], answered=answered, name=name))
    server.listen(port, listen_host())
    loop = ioloop.IOLoop.current()
    status = {"code": 0}

    async def load():
        # Load once the hub has had its answer (or after a few seconds). Loading blocks this loop;
        # requests that come meanwhile wait in the socket's backlog and are answered by the real
        # service. (Loading in a thread instead stalls the loop on Python's import lock.)
        try:
            await asyncio.wait_for(answered.wait(), timeout=3)
        except asyncio.TimeoutError:
            pass
        try:
            if build is None:
                from . import service  # JupyterHub's OAuth client, SQLAlchemy, matplotlib ...

                prepared = service.prepare(load_config)  # ... and the ledger's tables
                started = None if prepared is None else service.Started(prepared)
            else:
                started = build(load_config)
            if started is None:  # the message is printed; the hub sees the service exit
                status["code"] = 2
                loop.stop()
                return
        except Exception:  # noqa: BLE001 - a service that cannot load must exit, not say "starting" forever
            import traceback

            traceback.print_exc()
            status["code"] = 1
            loop.stop()
            return
        server.request_callback = started.app  # new requests go to the real application
        started.start()

    loop.add_callback(load)

    hub_pid = os.getppid()

    def hub_gone():  # a hub killed outright (SIGKILL, OOM) cannot stop its services: do not outlive it
        if os.getppid() != hub_pid:
            print(f"[W posehub.{name}] the hub (pid {hub_pid}) is gone: {name} service stopping", file=sys.stderr)
            loop.stop()

    ioloop.PeriodicCallback(hub_gone, 1000).start()
    try:
        loop.start()
    except KeyboardInterrupt:  # the hub stops its services with SIGINT/SIGTERM
        print(f"[I posehub.{name}] {name} service stopped", file=sys.stderr)
    return status["code"]


