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
from ..config import CONFIG_ENV, HUB_CONFIG_DIR, ConfigError, PoseHubConfig, load
from .hubapply import PROXY_BIN


def ensure_admin_password(cfg: PoseHubConfig) -> tuple[Path, str | None]:
    """Create the bootstrap admin's password file at first start.

    Returns the file and the new password (None when it already existed).
    The file is created with mode 0600 in one step, never readable by others.
    """
    path = cfg.state_dir / "admin-password"
    cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        return path, None
    password = secrets.token_urlsafe(15)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return path, password


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
    admins = cfg.admins
    if admins and cfg["auth"]["type"] == "local":
        path, password = ensure_admin_password(cfg)
        if password:
            bar = "=" * 72
            print(f"{bar}\nFirst start: admin account '{admins[0]}', password: {password}\n"
                  f"(shown once; kept in {path}, readable only by you)\n{bar}", flush=True)
        else:
            print(f"Admin account '{admins[0]}': password in {path}", flush=True)
    if cfg["buckets"]["backend"] == "local" and cfg["buckets"]["demo_bucket"]:
        from ..demodata import DemoDataError, install

        try:
            install(cfg)
        except DemoDataError as err:  # the hub serves without it; the notebooks say what is missing
            print(f"warning: no demo data: {err}", file=sys.stderr, flush=True)
    url = f"http://{cfg['hub']['ip']}:{cfg['hub']['port']}"
    print(f"Starting PoseHub at {url} (config {cfg.path}); Ctrl-C stops it.", flush=True)
    jupyterhub = Path(sys.executable).parent / "jupyterhub"
    argv = [str(jupyterhub), "-f", str(HUB_CONFIG_DIR / "jupyterhub_config.py")]
    os.chdir(cfg.state_dir)
    os.execve(argv[0], argv, env)
    return 0  # not reached
