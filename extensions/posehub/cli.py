"""The ``posehub`` command line.

    posehub up                 start the hub with hub_config/posehub.yaml (or --config)
    posehub check-config FILE  validate a config file
    posehub version            print the version
    posehub env build IMAGE    build the local environment of an image
    posehub docs config        print the configuration reference (Markdown)
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import ConfigError, load


def _cmd_version(args) -> int:
    print(f"posehub {__version__}")
    return 0


def _cmd_check_config(args) -> int:
    try:
        cfg = load(args.file)
    except ConfigError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return 2
    print(f"ok: {cfg.path} ({len(cfg['profiles'])} profiles, {len(cfg['images'])} images)")
    return 0


def _cmd_up(args) -> int:
    from .up import run

    return run(args.config)


def _cmd_env_build(args) -> int:
    from . import environments

    try:
        environments.build(args.image)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_docs_config(args) -> int:
    from .docs import config_reference

    print(config_reference(), end="")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posehub", description="PoseHub: JupyterHub for pose estimation labs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("version", help="print the version")
    s.set_defaults(func=_cmd_version)

    s = sub.add_parser("check-config", help="validate a posehub.yaml")
    s.add_argument("file")
    s.set_defaults(func=_cmd_check_config)

    s = sub.add_parser("up", help="start the hub on this machine")
    s.add_argument("--config", default=None, help="config file (default: $POSEHUB_CONFIG or hub_config/posehub.yaml)")
    s.set_defaults(func=_cmd_up)

    s = sub.add_parser("env", help="local environments of images")
    envsub = s.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    b = envsub.add_parser("build", help="build .envs/IMAGE from images/IMAGE/requirements.txt")
    b.add_argument("image")
    b.set_defaults(func=_cmd_env_build)

    s = sub.add_parser("docs", help="generated documentation")
    docsub = s.add_subparsers(dest="docs_command", required=True, metavar="WHAT")
    d = docsub.add_parser("config", help="configuration reference from the schema")
    d.set_defaults(func=_cmd_docs_config)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
