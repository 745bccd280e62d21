"""The ``posehub`` command line.

    posehub up                 start the hub with hub_config/posehub.yaml (or --config)
    posehub check-config FILE  validate a config file
    posehub version            print the version
    posehub env build IMAGE    build the local environment of an image
    posehub docs config        print the configuration reference (Markdown)
    posehub cost report        spend per user for a period (csv, html or json)
    posehub cost estimate      monthly cost of a usage pattern
    posehub prices refresh     profile prices from the AWS Price List API
    posehub demo-data          copy DeepLabCut's open-field example into the demo bucket
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
    from .hub.up import run

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


def _load_or_exit(path):
    try:
        return load(path)
    except ConfigError as err:
        print(f"invalid config: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _cmd_cost_report(args) -> int:
    from cost_reports import render
    from cost_reports.core import CostReporter

    from pathlib import Path

    from sqlalchemy.exc import SQLAlchemyError

    from cost_reports.core import ledger_url

    cfg = _load_or_exit(args.config)
    url = ledger_url(cfg)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        print(f"error: no ledger at {url[len('sqlite:///'):]}: the hub has not run with this config yet",
              file=sys.stderr)
        return 2
    try:
        rep = CostReporter(cfg)
    except SQLAlchemyError as e:
        print(f"error: cannot open the ledger database: {e.orig if getattr(e, 'orig', None) else e}", file=sys.stderr)
        return 2
    try:
        period = rep.period(args.period)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.user:
        report = rep.user_report(args.user, rep.config_groups(args.user), period)
        out = {"csv": render.user_csv, "json": render.user_json, "html": render.user_html}[args.format](report)
    else:
        users = {u: rep.config_groups(u) for u in cfg.admins}
        report = rep.admin_report(period, users)
        out = {"csv": render.admin_csv, "json": render.admin_json, "html": render.admin_html}[args.format](report)
    if args.format == "html":
        out = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>PoseHub costs {period.label}</title>"
               f"</head><body>\n{out}</body></html>\n")
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


def _cmd_cost_estimate(args) -> int:
    from datetime import datetime, timezone

    from cost_reports.estimate import estimate

    cfg = _load_or_exit(args.config)
    profile = cfg.profile(args.profile)
    if profile is None:
        slugs = ", ".join(p["slug"] for p in cfg["profiles"])
        print(f"error: unknown profile {args.profile!r} (expected one of: {slugs})", file=sys.stderr)
        return 2
    try:
        e = estimate(args.users, args.hours_weekday, args.hours_weekend, profile["price_per_hour"],
                     args.month or datetime.now(timezone.utc), cfg["costs"]["fixed_monthly"])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.format == "json":
        import json

        print(json.dumps({"month": e.month, "profile": profile["slug"], "price_per_hour": str(profile["price_per_hour"]),
                          "users": e.users, "weekdays": e.weekdays, "weekend_days": e.weekend_days,
                          "hours_per_user": str(e.hours_per_user), "per_user": f"{e.per_user:.2f}",
                          "total": f"{e.total:.2f}", "fixed_monthly": {k: f"{v:.2f}" for k, v in e.fixed.items()},
                          "fixed_per_user": f"{e.fixed_per_user:.2f}", "per_user_month": f"{e.per_user_month:.2f}",
                          "grand_total": f"{e.grand_total:.2f}"}, indent=1))
        return 0
    print(f"{e.month}: {e.weekdays} weekdays x {args.hours_weekday} h + {e.weekend_days} weekend days x "
          f"{args.hours_weekend} h = {e.hours_per_user.normalize():f} h per user on '{profile['slug']}' "
          f"at ${profile['price_per_hour']}/h")
    print(f"compute per user: ${e.per_user:,.2f} per month")
    if e.fixed:
        items = ", ".join(f"{k} ${v:,.2f}" for k, v in e.fixed.items())
        print(f"fixed costs: ${sum(e.fixed.values()):,.2f} per month ({items}), "
              f"${e.fixed_per_user:,.2f} per user")
    else:
        print("fixed costs: none set (costs.fixed_monthly)")
    print(f"total per user-month: ${e.per_user_month:,.2f}")
    print(f"{e.users} users: ${e.grand_total:,.2f} per month")
    return 0


def _cmd_prices_refresh(args) -> int:
    import boto3

    from cost_reports.prices import PricingError, refresh_prices
    from .config import write_prices

    cfg = _load_or_exit(args.config)
    client = boto3.client("pricing", region_name="us-east-1")
    try:
        updates = refresh_prices(cfg, client, region=args.region)
    except (PricingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not updates:
        print("no profile names an aws_instance_type: nothing to refresh")
        return 0
    for u in updates:
        mark = "" if not u.changed else "  (changed)"
        print(f"{u.slug:20} {u.instance_type:14} ${u.old}/h -> ${u.new}/h{mark}")
    if args.write:
        changed = [u for u in updates if u.changed]
        if changed:
            write_prices(cfg.path, {u.slug: u.new for u in changed})
            print(f"wrote {len(changed)} price(s) to {cfg.path}")
        else:
            print("prices are current; nothing written")
    elif any(u.changed for u in updates):
        print("run again with --write to save the new prices in the config file")
    return 0


def _cmd_demo_data(args) -> int:
    from .demodata import DemoDataError, install

    cfg = _load_or_exit(args.config)
    try:
        install(cfg)
    except DemoDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_helm(args) -> int:
    from .k8s import cli as helm_cli

    return helm_cli.main(args.helm_args)


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

    cfg_help = "config file (default: $POSEHUB_CONFIG or hub_config/posehub.yaml)"
    s = sub.add_parser("cost", help="the cost ledger: reports and estimates")
    costsub = s.add_subparsers(dest="cost_command", required=True, metavar="ACTION")
    r = costsub.add_parser("report", help="spend of every user (or one) in a period")
    r.add_argument("--period", default=None, help="YYYY-MM (or YYYY-Www for weekly budgets); default: the current one")
    r.add_argument("--format", choices=["csv", "html", "json"], default="csv")
    r.add_argument("--user", default=None, help="one user's report (by profile and by day)")
    r.add_argument("--config", default=None, help=cfg_help)
    r.set_defaults(func=_cmd_cost_report)
    e = costsub.add_parser("estimate", help="monthly cost of a usage pattern")
    e.add_argument("--users", type=int, required=True)
    e.add_argument("--hours-weekday", type=float, required=True, help="hours per user on each weekday")
    e.add_argument("--hours-weekend", type=float, default=0, help="hours per user on each weekend day")
    e.add_argument("--profile", required=True, help="profile slug")
    e.add_argument("--month", default=None, help="YYYY-MM (default: this month)")
    e.add_argument("--format", choices=["text", "json"], default="text")
    e.add_argument("--config", default=None, help=cfg_help)
    e.set_defaults(func=_cmd_cost_estimate)

    s = sub.add_parser("prices", help="profile prices")
    prsub = s.add_subparsers(dest="prices_command", required=True, metavar="ACTION")
    r = prsub.add_parser("refresh", help="prices of profiles with an aws_instance_type from the AWS Price List API")
    r.add_argument("--region", default="us-east-1", help="AWS region the instances run in")
    r.add_argument("--write", action="store_true", help="save the new prices in the config file")
    r.add_argument("--config", default=None, help=cfg_help)
    r.set_defaults(func=_cmd_prices_refresh)

    s = sub.add_parser("helm", help="Kubernetes: render the charts' values from posehub.yaml, validate them",
                       add_help=False)
    s.add_argument("helm_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=_cmd_helm)

    s = sub.add_parser("demo-data", help="copy DeepLabCut's open-field example into buckets.demo_bucket")
    s.add_argument("--config", default=None, help=cfg_help)
    s.set_defaults(func=_cmd_demo_data)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["helm"]:  # its own parser (posehub.k8s.cli), options included
        from .k8s import cli as helm_cli

        return helm_cli.main(argv[1:])
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
