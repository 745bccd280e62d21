"""Start Dask Gateway so that the hub sees it answer at once.

JupyterHub gives a managed service about ten seconds to answer HTTP, then
stops the whole hub; on a busy two-core machine dask-gateway-server and
PoseHub's backend take longer than that to import. So this module (standard
library only) answers the hub's first check on the gateway's public port with
``425 Too Early``, imports the gateway meanwhile, then frees the port and runs
``dask-gateway-server`` in this same process, whose proxy binds the port again.

    python -m posehub.gateway.launch -f hub_config/dask_gateway_config.py
"""

from __future__ import annotations

import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ANSWERED = threading.Event()


class Starting(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b"<!doctype html><meta http-equiv=refresh content=2><p>Dask Gateway is starting.</p>\n"
        self.send_response(425)
        self.send_header("Retry-After", "2")
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        ANSWERED.set()

    do_HEAD = do_POST = do_DELETE = do_GET

    def log_message(self, *args):
        pass


def watch_parent() -> None:
    """A hub killed outright (SIGKILL, OOM) cannot stop its services: when it is gone, stop as on
    SIGTERM (the gateway then stops its clusters), so the next hub starts its own gateway."""
    import signal
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        print(f"[W posehub.gateway] the hub (pid {parent}) is gone: Dask Gateway stopping", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def main(argv=None) -> int:
    watch_parent()
    url = os.environ.get("JUPYTERHUB_SERVICE_URL", "")
    port = urlparse(url).port
    placeholder = None
    if port:
        ThreadingHTTPServer.allow_reuse_address = True
        placeholder = ThreadingHTTPServer(("127.0.0.1", port), Starting)
        threading.Thread(target=placeholder.serve_forever, daemon=True).start()
        ANSWERED.wait(timeout=3)
    try:
        from dask_gateway_server.app import main as gateway_main  # the slow imports, while the port answers

        from . import auth, backend  # noqa: F401
    finally:
        if placeholder is not None:
            placeholder.shutdown()
            placeholder.server_close()
    gateway_main(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
