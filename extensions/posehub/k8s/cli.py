"""Render and check the Helm values of the Kubernetes deployment (``deploy/``).

    python -m posehub.k8s.cli render --config hub_config/posehub.yaml --out deploy/rendered \\
        --registry ghcr.io/posehub --tag 0.1.0 [--namespace posehub] [--hub-role-arn ARN]
    python -m posehub.k8s.cli validate --schemas ../shared/schemas [--dir deploy/rendered]

``render`` writes ``jupyterhub-values.yaml`` and ``dask-gateway-values.yaml``
(the latter only with ``dask.enabled``); ``validate`` checks them against the
charts' values schemas. Exit status: 0 done, 1 values that break a chart's
schema, 2 bad input (no such config, invalid config, missing files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..config import ConfigError, load
from . import helm

FILES = {"jupyterhub": "jupyterhub-values.yaml", "dask-gateway": "dask-gateway-values.yaml"}
HEADER = ("# Rendered by `python -m posehub.k8s.cli render` from {config}.\n"
          "# Do not edit: change posehub.yaml and render again. Install: see deploy/README.md.\n")


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (hub.extraConfig, gateway.extraConfig), no aliases."""

    def ignore_aliases(self, data):
        return True


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(values: dict) -> str:
    return yaml.dump(values, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110, allow_unicode=True)


def render(cfg, *, registry: str, tag: str, namespace: str, hub_role_arn: str = "") -> dict[str, dict]:
    """{chart: values} for this config."""
    out = {"jupyterhub": helm.z2jh_values(cfg, registry=registry, tag=tag, namespace=namespace,
                                          hub_role_arn=hub_role_arn)}
    if cfg["dask"].get("enabled", True):
        out["dask-gateway"] = helm.dask_gateway_values(cfg, registry=registry, tag=tag, namespace=namespace)
    return out


def cmd_render(args) -> int:
    cfg = load(args.config)  # ConfigError -> exit 2 in main()
    rendered = render(cfg, registry=args.registry, tag=args.tag, namespace=args.namespace,
                      hub_role_arn=args.hub_role_arn)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for chart, values in rendered.items():
        path = out / FILES[chart]
        path.write_text(HEADER.format(config=cfg.path) + dump(values))
        print(f"wrote {path}")
    stale = [out / f for chart, f in FILES.items() if chart not in rendered and (out / f).exists()]
    for path in stale:
        path.unlink()
        print(f"removed {path} (dask.enabled is false)")
    print("\ninstall (the chart versions PoseHub is tested with):")
    for chart in rendered:
        print(f"  {install_command(chart, out / FILES[chart], args.namespace)}")
    return 0


def install_command(chart: str, values_file, namespace: str) -> str:
    repo = {"jupyterhub": "jupyterhub/jupyterhub", "dask-gateway": "dask/dask-gateway"}[chart]
    release = helm.HUB_RELEASE if chart == "jupyterhub" else helm.DASK_RELEASE
    return (f"helm upgrade --install {release} {repo} -n {namespace} -f {values_file} "
            f"--version {helm.CHART_VERSIONS[chart]}")


def cmd_validate(args) -> int:
    schemas, folder = Path(args.schemas), Path(args.dir)
    if not schemas.is_dir():
        raise ConfigError(f"{schemas}: no such folder (it holds the charts' values schemas)")
    found = {chart: folder / f for chart, f in FILES.items() if (folder / f).exists()}
    if "jupyterhub" not in found:
        raise ConfigError(f"{folder / FILES['jupyterhub']}: no such file (run `render` first)")
    failed = 0
    for chart, path in found.items():
        try:
            errors = helm.validate_chart(yaml.safe_load(path.read_text()) or {}, chart, schemas)
        except FileNotFoundError as e:
            raise ConfigError(f"{e.filename}: no such file (the {chart} chart's schema)") from None
        for err in errors:
            print(f"{path}: {err}", file=sys.stderr)
        print(f"{path}: {'valid' if not errors else f'{len(errors)} error(s)'} against the {chart} chart's schema")
        failed += bool(errors)
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posehub helm", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="write the charts' values from posehub.yaml")
    r.add_argument("--config", default=None, help="posehub.yaml (default: $POSEHUB_CONFIG, else hub_config/posehub.yaml)")
    r.add_argument("--out", default="deploy/rendered", help="output folder (default: %(default)s)")
    r.add_argument("--registry", required=True, help="where the images are pushed, e.g. ghcr.io/posehub")
    r.add_argument("--tag", required=True, help="tag of the posehub-{base,pose,hub} images")
    r.add_argument("--namespace", default="posehub", help="Kubernetes namespace of both releases (default: %(default)s)")
    r.add_argument("--hub-role-arn", default="", help="IAM role of the hub's and the gateway's service accounts, which "
                                                      "issue users' S3 credentials (terraform output hub_role_arn); "
                                                      "needed with S3 buckets")
    r.set_defaults(func=cmd_render)
    v = sub.add_parser("validate", help="check rendered values against the charts' values schemas")
    v.add_argument("--schemas", required=True, help="folder with z2jh-values.schema.yaml, dask-gateway-values.schema.yaml "
                                                     "and the charts' default values")
    v.add_argument("--dir", default="deploy/rendered", help="folder of the rendered values (default: %(default)s)")
    v.set_defaults(func=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, helm.RenderError) as e:
        print(f"posehub helm: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
