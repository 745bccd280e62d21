"""jupyterhub-idle-culler with PoseHub's idle limit of each server's profile: the hub's managed service, on one
machine and in the hub pod on Kubernetes alike.

    python -m posehub.idleculler        (with $POSEHUB_CONFIG and the hub's $JUPYTERHUB_API_TOKEN/_URL)

The culler's ``timeout`` is the shortest limit and its ``cull_arbiter_hook`` (:func:`posehub.culling.arbiter`)
applies each server's own (the limit it started with, kept in its state); the decisions are
:mod:`posehub.culling`'s.
"""

from __future__ import annotations

import os
import sys


def config(cfg):
    """The culler's traitlets config for ``cfg``."""
    from traitlets.config import Config

    from . import culling

    c = Config()
    for name, value in culling.culler_settings(cfg).items():
        setattr(c.IdleCuller, name, value)
    c.IdleCuller.cull_arbiter_hook = culling.arbiter(cfg)
    return c


def main(argv: list[str] | None = None) -> int:
    from jupyterhub_idle_culler import IdleCuller

    from .config import ConfigError, load

    try:
        cfg = load(os.environ.get("POSEHUB_CONFIG") or None)
    except ConfigError as e:
        print(f"idle culler cannot start: {e}", file=sys.stderr)
        return 2
    IdleCuller.launch_instance(argv=argv or [], config=config(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
