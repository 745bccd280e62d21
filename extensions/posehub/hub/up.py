"""``posehub up``: first-start setup, then run JupyterHub in the foreground.

Ctrl-C reaches JupyterHub, which stops the proxy and every server it started.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from .. import environments
from . import isolation
from .auth import admin_password_file
from ..config import CONFIG_ENV, HUB_CONFIG_DIR, ConfigError, PoseHubConfig, load
from .hubapply import PROXY_BIN


def ensure_admin_passwords(cfg: PoseHubConfig) -> list[tuple[str, Path, str | None]]:
    """Create a password file for every admin at first start (:func:`posehub.hub.auth.admin_password_file`), so
    that every name in ``admins`` exists from the first start and no one else can claim it.

    Returns (name, file, new password or None when the file already existed). Each file is created with
    mode 0600 in one step, never readable by others."""
    cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = []
    for name in cfg.admins:
        path = admin_password_file(cfg.state_dir, cfg.admins, name)
        if path.exists():
            out.append((name, path, None))
            continue
        password = secrets.token_urlsafe(15)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        out.append((name, path, password))
    return out


def ensure_crypt_key(cfg: PoseHubConfig) -> str:
    """The key that encrypts the sign-in tokens the hub keeps (auth state), made at first start
    in ``<state_dir>/crypt-key`` (mode 0600)."""
    path = cfg.state_dir / "crypt-key"
    cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip()


def preflight(cfg: PoseHubConfig) -> list[str]:
    """What is missing before the hub can serve anyone."""
    problems = []
    if not PROXY_BIN.exists():
        problems.append(f"the proxy is not installed ({PROXY_BIN}); run `make up` (or `npm ci`)")
    images = {p["image"] for p in cfg["profiles"]}
    if images and not any(environments.is_built(i) for i in images):
        problems.append(
            "no profile environment is built; run " + " or ".join(f"`{environments.build_command(i)}`" for i in sorted(images))
        )
    return problems + isolation.problems(cfg)


def run(config: str | None = None) -> int:
    try:
        cfg = load(config)
    except ConfigError as err:
        print(f"PoseHub cannot start: {err}", file=sys.stderr)
        return 2
    problems = preflight(cfg)
    if problems:
        for p in problems:
            print(f"PoseHub cannot start: {p}", file=sys.stderr)
        return 2
    isolation.secure_folders(cfg)
    print(isolation.describe(cfg), flush=True)
    env = dict(os.environ, **{CONFIG_ENV: str(Path(cfg.path).resolve())})
    if cfg["auth"]["type"] == "oidc":
        from .oidc import client_secret

        try:
            client_secret(cfg)
        except ValueError as err:
            print(f"PoseHub cannot start: {err}", file=sys.stderr)
            return 2
        env.setdefault("JUPYTERHUB_CRYPT_KEY", ensure_crypt_key(cfg))
    if cfg["auth"]["type"] == "local":
        for name, path, password in ensure_admin_passwords(cfg):
            if password:
                bar = "=" * 72
                print(f"{bar}\nFirst start: admin account '{name}', password: {password}\n"
                      f"(shown once; kept in {path}, readable only by you)\n{bar}", flush=True)
            else:
                print(f"Admin account '{name}': password in {path}", flush=True)
    if cfg["buckets"]["backend"] == "local" and cfg["buckets"]["demo_bucket"]:
        from ..demodata import DemoDataError, install

        try:
            install(cfg)
        except DemoDataError as err:  # the hub serves without it; the notebooks say what is missing
            print(f"warning: no demo data: {err}", file=sys.stderr, flush=True)
    url = cfg.public_url
    print(f"Starting PoseHub at {url} (config {cfg.path}); Ctrl-C stops it.", flush=True)
    jupyterhub = Path(sys.executable).parent / "jupyterhub"
    argv = [str(jupyterhub), "-f", str(HUB_CONFIG_DIR / "jupyterhub_config.py")]
    os.chdir(cfg.state_dir)
    os.execve(argv[0], argv, env)
    return 0  # not reached
