"""The hub's command for the cost service: PoseHub's config handed to ``cost_reports``.

Imports go one way: ``posehub`` uses ``cost_reports`` (the spawner's cost gate, this launcher);
``cost_reports`` imports nothing of ``posehub``. ::

    python -m posehub.costservice      (a managed service of the hub; the chart runs it in the hub pod)
"""

from __future__ import annotations

import os
import sys

from cost_reports.launch import CannotStart, main


def load_config():
    """The config and Dask Gateway's API URL (None when ``dask.enabled`` is false)."""
    from .config import ConfigError, load
    from .gateway.settings import GATEWAY_URL_ENV, PREFIX, addresses

    try:
        cfg = load(os.environ.get("POSEHUB_CONFIG") or None)
    except ConfigError as e:
        raise CannotStart(str(e)) from None
    gateway = None
    if cfg["dask"]["enabled"]:
        gateway = os.environ.get(GATEWAY_URL_ENV) or f"http://{addresses(cfg)['public']}{PREFIX}"
    return cfg, gateway


if __name__ == "__main__":
    sys.exit(main(load_config))
