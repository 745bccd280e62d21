"""Load and validate ``hub_config/posehub.yaml``.

The schema beside the config file is the one declaration of every key, its
type, its default and its documentation. This module only reads: it turns a
file into a validated, defaults-filled :class:`PoseHubConfig`, or raises
:class:`ConfigError` with one line naming the key path and what was expected.
Nothing here touches JupyterHub; the local wiring lives in ``posehub.hub.hubapply``
and the Kubernetes rendering reads the same model.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_CONFIG_DIR = REPO_ROOT / "hub_config"
DEFAULT_CONFIG = HUB_CONFIG_DIR / "posehub.yaml"
SCHEMA_FILE = HUB_CONFIG_DIR / "posehub.schema.yaml"
CONFIG_ENV = "POSEHUB_CONFIG"


class ConfigError(Exception):
    """A config file that cannot be used. ``str(err)`` is the whole message."""


def load_schema() -> dict:
    with open(SCHEMA_FILE) as f:
        return yaml.safe_load(f)


def config_path(path: str | os.PathLike | None = None) -> Path:
    """The config file to use: the argument, else ``$POSEHUB_CONFIG``, else the embedded default."""
    if path:
        return Path(path)
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


# ---------------------------------------------------------------- messages


def format_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}


def _describe_value(value) -> str:
    if isinstance(value, (dict, list)):
        kind = "a mapping" if isinstance(value, dict) else "a list"
        return kind
    return json.dumps(value)


def _expected(error: jsonschema.ValidationError) -> str:
    v, val = error.validator, error.validator_value
    if v == "type":
        types = val if isinstance(val, list) else [val]
        return " or ".join(_TYPE_WORDS.get(t, t) for t in types)
    if v == "minimum":
        return f"a number >= {val}"
    if v == "exclusiveMinimum":
        return f"a number > {val}"
    if v == "maximum":
        return f"a number <= {val}"
    if v == "enum":
        return "one of " + ", ".join(json.dumps(x) for x in val)
    if v == "pattern":
        return f"a string matching {val}"
    if v == "minLength":
        return "a non-empty string" if val == 1 else f"a string of at least {val} characters"
    if v in ("minItems", "minProperties"):
        return f"at least {val} entr{'y' if val == 1 else 'ies'}"
    if v == "uniqueItems":
        return "a list without repeated items"
    if v == "oneOf":
        return " or ".join(_expected_from_schema(s) for s in val)
    return error.message


def _expected_from_schema(schema: dict) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(x) for x in schema["enum"])
    t = schema.get("type")
    if t == "array" and "items" in schema:
        return "a list of " + _TYPE_WORDS.get(schema["items"].get("type"), "items").replace("an ", "").replace("a ", "") + "s"
    return _TYPE_WORDS.get(t, str(t))


def _message(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = extra[0] if extra else "?"
        where = format_path(path + [key])
        if allowed:
            return f"{where}: unknown key '{key}' (expected one of: {', '.join(allowed)})"
        return f"{where}: unknown key '{key}'"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        key = missing[0] if missing else "?"
        return f"{format_path(path + [key])}: missing (required)"
    return f"{format_path(path)}: expected {_expected(error)}, got {_describe_value(error.instance)}"


def _sort_key(error: jsonschema.ValidationError):
    # Report the first problem in file order, the deepest one at that place.
    return ([str(p) for p in error.absolute_path], -len(error.absolute_path))


# ---------------------------------------------------------------- defaults


def _apply_defaults(instance: Any, schema: dict) -> Any:
    """Fill missing keys from the schema's ``default`` values, recursively."""
    if isinstance(instance, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                instance[key] = _apply_defaults(instance[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in instance:
                if key not in props:
                    instance[key] = _apply_defaults(instance[key], extra)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(item, schema["items"]) for item in instance]
    return instance


# ---------------------------------------------------------------- checks beyond the schema


def _semantic_errors(cfg: dict) -> list[str]:
    errors = []
    images = cfg["images"]
    seen = {}
    for i, profile in enumerate(cfg["profiles"]):
        if profile["image"] not in images:
            errors.append(
                f"profiles[{i}].image: unknown image '{profile['image']}' "
                f"(expected one of: {', '.join(sorted(images))})"
            )
        if profile["slug"] in seen:
            errors.append(
                f"profiles[{i}].slug: '{profile['slug']}' is already used by profiles[{seen[profile['slug']]}]"
            )
        seen.setdefault(profile["slug"], i)
    errors += _bucket_errors(cfg["buckets"])
    errors += _dask_errors(cfg["dask"], list(seen))
    errors += _port_errors(cfg)
    errors += _auth_errors(cfg["auth"])
    errors += _isolation_errors(cfg)
    errors += _tls_errors(cfg["hub"])
    if cfg["auth"]["type"] == "oidc":
        errors += [f"groups.{name}.users: with single sign-on (auth.type: oidc) group members come from the "
                   "identity provider's groups claim; list no users here"
                   for name, g in cfg["groups"].items() if g["users"]]
    return errors


def _dask_errors(d: dict, slugs: list[str]) -> list[str]:
    errors = []
    for i, slug in enumerate(d["worker_profiles"]):
        if slug not in slugs:
            errors.append(f"dask.worker_profiles[{i}]: unknown profile '{slug}' (expected one of: {', '.join(slugs)})")
    offered = d["worker_profiles"] or slugs
    if d["default_worker_profile"] and d["default_worker_profile"] not in offered:
        errors.append(f"dask.default_worker_profile: '{d['default_worker_profile']}' is not a worker profile "
                      f"(expected one of: {', '.join(offered)})")
    return errors


def _port_errors(cfg: dict) -> list[str]:
    """Two services of one machine on one port."""
    errors, d = [], cfg["dask"]
    ports = {"hub.port": cfg["hub"]["port"], "hub.hub_port": cfg["hub"]["hub_port"],
             "hub.proxy_api_port": cfg["hub"]["proxy_api_port"], "costs.port": cfg["costs"]["port"]}
    if cfg["buckets"]["backend"] == "s3" and cfg["buckets"]["sts"]["role_arn"]:
        ports["buckets.sts.credentials_port"] = cfg["buckets"]["sts"]["credentials_port"]
    if d["enabled"]:
        ports.update({"dask.port": d["port"], "dask.scheduler_port": d["scheduler_port"], "dask.api_port": d["api_port"]})
    seen_ports: dict = {}
    for key, port in ports.items():
        if port in seen_ports:
            errors.append(f"{key}: port {port} is already used by {seen_ports[port]}")
        seen_ports.setdefault(port, key)
    return errors


ONE_PERSON = "one-person-no-isolation"


def is_loopback(ip: str) -> bool:
    import ipaddress

    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _tls_errors(hub: dict) -> list[str]:
    tls = hub["tls"]
    if bool(tls["cert_file"]) != bool(tls["key_file"]):
        return ["hub.tls: give both cert_file and key_file (the certificate and its private key), or neither"]
    if tls["cert_file"] and tls["behind_proxy_url"]:
        return ["hub.tls: give cert_file and key_file (the hub serves HTTPS itself) or behind_proxy_url (a proxy in "
                "front does), not both"]
    if not is_loopback(hub["ip"]) and not (tls["cert_file"] or tls["behind_proxy_url"]):
        return [f"hub.ip: {hub['ip']} can be reached from other machines, and passwords and tokens would cross the "
                "network in clear text: set hub.tls.cert_file and hub.tls.key_file, or hub.tls.behind_proxy_url (the "
                "https:// address of a TLS-terminating proxy in front), or listen on 127.0.0.1"]
    return []


def _isolation_errors(cfg: dict) -> list[str]:
    """``isolation.mode: one-person-no-isolation`` runs every server as the hub's own account: only where
    exactly one person can ever sign in."""
    if cfg["isolation"]["mode"] != ONE_PERSON:
        return []
    why = ("isolation.mode: 'one-person-no-isolation' runs every server as the hub's own account, so it is only for "
           "one person's own workstation; ")
    people = set(cfg["admins"]) | {u for g in cfg["groups"].values() for u in g["users"]}
    if cfg["auth"]["type"] == "oidc":
        return [why + "with single sign-on anyone the identity provider allows could sign in. "
                "Use isolation.mode: accounts (run the hub as root)"]
    if cfg["auth"]["local"]["open_signup"]:
        return [why + "open sign-up lets anyone make an account. Set auth.local.open_signup: false, "
                "or use isolation.mode: accounts (run the hub as root)"]
    if len(cfg["admins"]) != 1 or len(people) != 1:
        return [why + f"this file names {len(people)} people ({', '.join(sorted(people)) or 'none'}). "
                "Name exactly one under admins and no one else, or use isolation.mode: accounts (run the hub as root)"]
    return []


def _auth_errors(auth: dict) -> list[str]:
    oidc = auth.get("oidc")
    if auth["type"] == "oidc" and not oidc:
        return ["auth: type 'oidc' needs an auth.oidc block (institution_name, issuer_url, client_id, client secret)"]
    if auth["type"] == "oidc":
        from .hub.oidc_policy import config_errors

        if config_errors(oidc):
            return config_errors(oidc)
        if oidc["client_secret_file"] and oidc["client_secret_env"]:
            return ["auth.oidc: give client_secret_file or client_secret_env, not both"]
        if not (oidc["client_secret_file"] or oidc["client_secret_env"]):
            return ["auth.oidc: the client secret is missing: set client_secret_file or client_secret_env "
                    "(it is never written in this file)"]
    return []


def _bucket_errors(b: dict) -> list[str]:
    errors = []
    places = [(f"buckets.shared[{i}]", x) for i, x in enumerate(b["shared"])]
    if b.get("home"):
        places.append(("buckets.home", b["home"]))
    names = {}
    for where, bucket in places:
        if bucket["name"] in names:
            errors.append(f"{where}.name: '{bucket['name']}' is already used by {names[bucket['name']]}")
        names.setdefault(bucket["name"], where)
        if bucket["keys_file"] and bucket["keys_env"]:
            errors.append(f"{where}: give keys_file or keys_env, not both")
        elif b["backend"] == "s3" and not (bucket["keys_file"] or bucket["keys_env"] or b["sts"]["role_arn"]):
            errors.append(f"{where}: needs credentials for users: set keys_file or keys_env (static keys), "
                          "or buckets.sts.role_arn (short-lived credentials from STS)")
    shared = [x["name"] for x in b["shared"]]
    if b["demo_bucket"] and b["demo_bucket"] not in shared:
        errors.append(f"buckets.demo_bucket: '{b['demo_bucket']}' is not one of buckets.shared "
                      f"(expected one of: {', '.join(shared) or 'none'})")
    return errors


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class PoseHubConfig:
    """The validated configuration, defaults filled in. ``data`` mirrors the YAML."""

    data: dict
    path: Path

    def __getitem__(self, key):
        return self.data[key]

    def get(self, dotted: str, default=None):
        """``cfg.get("budgets.default")``: a value by dotted path."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def resolve(self, path: str) -> Path:
        """A path from the config, relative ones taken from the repository root."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.data["hub"]["state_dir"])

    @property
    def public_url(self) -> str:
        """Where people reach the hub: the TLS proxy in front, or the hub's own address (https with a certificate)."""
        hub = self.data["hub"]
        if hub["tls"]["behind_proxy_url"]:
            return hub["tls"]["behind_proxy_url"].rstrip("/")
        return f"{'https' if hub['tls']['cert_file'] else 'http'}://{hub['ip']}:{hub['port']}"

    @property
    def data_dir(self) -> Path:
        """Users' data on one machine: homes, local buckets, mounts, Dask cluster folders."""
        return self.resolve(self.data["hub"]["data_dir"])

    @property
    def isolated(self) -> bool:
        """One system account and control group per user (``isolation.mode: accounts``)."""
        return self.data["isolation"]["mode"] != ONE_PERSON

    @property
    def admins(self) -> list[str]:
        return list(self.data["admins"])

    def profile(self, slug: str) -> dict | None:
        return next((p for p in self.data["profiles"] if p["slug"] == slug), None)


def validate(raw: Any, path: Path | str = "<config>") -> PoseHubConfig:
    """Validate parsed YAML; fill defaults. Raises :class:`ConfigError`."""
    if raw is None:
        raw = {}
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=_sort_key)
    if errors:
        raise ConfigError(f"{path}: {_message(errors[0])}")
    data = _apply_defaults(copy.deepcopy(raw), schema)
    problems = _semantic_errors(data)
    if problems:
        raise ConfigError(f"{path}: {problems[0]}")
    return PoseHubConfig(data=data, path=Path(path))


def load(path: str | os.PathLike | None = None) -> PoseHubConfig:
    """Read, validate and fill defaults of a config file. Raises :class:`ConfigError`."""
    p = config_path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{p}: (top level): expected a mapping, got {_describe_value(raw)}")
    return validate(raw, p)


_SLUG_LINE = re.compile(r"^(\s*)-\s+slug:\s*['\"]?([a-z0-9-]+)['\"]?\s*$")
_PRICE_LINE = re.compile(r"^(\s*price_per_hour:\s*)([^#\s]+)(.*)$")


def set_prices_text(text: str, prices: dict) -> str:
    """``text`` of a posehub.yaml with ``price_per_hour`` of the profiles in ``prices`` replaced,
    comments and layout kept (pure). Raises ConfigError when a profile has no price line."""
    lines = text.splitlines(keepends=True)
    current, done = None, set()
    for i, line in enumerate(lines):
        m = _SLUG_LINE.match(line.rstrip("\n"))
        if m:
            current = m.group(2)
            continue
        p = _PRICE_LINE.match(line.rstrip("\n"))
        if p and current in prices and current not in done:
            end = "\n" if line.endswith("\n") else ""
            lines[i] = f"{p.group(1)}{prices[current]}{p.group(3)}{end}"
            done.add(current)
    missing = sorted(set(prices) - done)
    if missing:
        raise ConfigError(f"cannot find 'price_per_hour' of profile '{missing[0]}' to update")
    return "".join(lines)


def write_prices(path: Path, prices: dict) -> None:
    """Update profile prices in the config file; the result is validated before it replaces the file."""
    path = Path(path)
    new = set_prices_text(path.read_text(), prices)
    validate(yaml.safe_load(new), path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
