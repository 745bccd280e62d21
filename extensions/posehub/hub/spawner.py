"""The spawner for one machine.

Each user runs as their own system account (:mod:`posehub.hub.accounts`, made at
the first spawn) with a private home, and each server in its own control group
holding the profile's memory, CPUs, process count and GPU devices
(:mod:`posehub.hub.isolation`); stopping a server kills everything in its group.
The JupyterLab server runs from the local environment of the profile's image
(``.envs/<image>``). Profiles are offered through the spawn form, filtered by
:mod:`posehub.profiles`; GPU profiles get exclusive GPU indices from a
:class:`posehub.gpus.SharedGpuPool`, shared with the Dask Gateway's workers.
With ``isolation.mode: one-person-no-isolation`` servers run as the hub's own
account with no limits (one person's own workstation).
"""

from __future__ import annotations

import asyncio
import inspect
import os
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Dict, Float, List, Unicode, default

from cost_reports.reservations import BudgetExceeded

from . import accounts, cgroups, costs, homefiles, hubapply, isolation, s3broker, s3creds, s3plan, workspace
from .errors import ProfileError  # noqa: F401 - where the hub and tests expect it too
from .. import culling, desktop, environments, gpus, profiles
from ..gateway import policy as gateway_policy
from ..gateway import settings as gateway_settings
from ..storage import MANIFEST_ENV
from ..config import PoseHubConfig, load

LABEXTENSIONS = Path(__file__).resolve().parents[2] / "labextension"
_templates = Environment(
    loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=select_autoescape(["html"]),
)


@lru_cache(maxsize=8)
def _config(path: str) -> PoseHubConfig:
    return load(path or None)


_pools: dict[tuple, gpus.GpuPool] = {}
SERVER_OWNER = "server:"  # GPU owners: "server:<user>/<server name>" (Dask workers are "dask:...")


def gpu_pool(cfg: PoseHubConfig) -> gpus.GpuPool:
    """The machine's GPUs, shared with the Dask Gateway's workers through ``<state_dir>/gpus.json``.

    The first call in a hub process gives back every GPU the file says a server holds: the servers still
    running re-register theirs from their saved state (``load_state``) as the hub starts."""
    setting = cfg["gpus"]["devices"]
    key = (str(cfg.state_dir),) + (tuple(setting) if isinstance(setting, list) else (setting,))
    if key not in _pools:
        pool = gpus.shared_pool(cfg.state_dir, setting)
        pool.release_matching(SERVER_OWNER)
        _pools[key] = pool
    return _pools[key]



LAB_NOTIFICATION_SETTINGS = Path(".jupyter/lab/user-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings")


def quiet_lab_defaults(home: Path, uid: int, gid: int) -> None:
    """Workspaces may have no internet: JupyterLab does not ask about its news feed or check for
    updates. Written once, as the user's own setting, so they can change it."""
    homefiles.write_file(home, str(LAB_NOTIFICATION_SETTINGS), '{"fetchNews": "false", "checkForUpdates": false}\n',
                         uid=uid, gid=gid, mode=0o644, only_if_missing=True)


class PoseHubSpawner(LocalProcessSpawner):
    config_file = Unicode("", config=True, help="posehub.yaml to read (default: $POSEHUB_CONFIG or the embedded one).")
    gpu_indices = List(help="GPU indices held by this server.")
    profile_slug = Unicode("", help="Slug of the running profile.")
    idle_limit_seconds = Float(0.0, help="Idle limit of the running server: its profile's when it started (the culler "
                                         "reads it from the server's state).")
    sandbox_state = Dict(help="The control group of the running server (posehub.hub.cgroups), kept across hub restarts.")
    storage_state = Dict(help="The running server's STS credential lease (its secret's digest, the groups it was planned for) "
                              "and its manifest without credentials, kept across hub restarts.")
    _account = None  # accounts.Account of this user (isolation.mode: accounts), set at start
    _loaded_running = False  # state was loaded from the hub database with a process id (hub restart)
    _activity_at_load = None  # the server's last activity as the hub database had it then
    _lease = None  # s3broker.Lease: the server's STS credentials, renewed while it runs
    _renewal = None  # the asyncio task renewing them
    _effective = None  # the profiles with admins' settings when this server was started (apply_profile)

    # ------------------------------------------------------------ policy

    @property
    def posehub_config(self) -> PoseHubConfig:
        return _config(self.config_file)

    def user_groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    @property
    def home_dir(self) -> str:
        return str(isolation.home_of(self.posehub_config, self.user.name))

    def account_refusal(self) -> str:
        """Why this hub name cannot get a system account ('' when it can); nothing is created."""
        try:
            accounts.system_name(self.user.name, self.posehub_config["isolation"]["account_prefix"])
        except accounts.AccountError as e:
            return str(e)
        return ""

    async def effective_profiles(self) -> list[dict]:
        """The profiles with admins' run-time settings (who may use each, idle limits), read from the ledger at
        every spawn so that a change on the admin page applies to the next spawn without a restart."""
        try:
            return await costs.off_loop().acall(lambda: self.cost_gate.reporter.profiles())
        except costs.LedgerSlow as e:
            raise ProfileError(503, str(e)) from None

    def offered_profiles(self, effective: list[dict]) -> list[dict]:
        return profiles.allowed_profiles(
            self.posehub_config, self.user.name, self.user_groups(), bool(self.user.admin), effective
        )

    def unavailable_reason(self, profile: dict) -> str:
        """Why a profile the user may use cannot start right now ('' when it can)."""
        if not environments.is_built(profile["image"]):
            return f"The environment of image '{profile['image']}' has not been built on this machine yet."
        memory = isolation.memory_refusal(self.posehub_config, profile)
        if memory:
            return memory
        if profile["gpus"]:
            pool = gpu_pool(self.posehub_config)
            try:
                if not pool.held_by(self._owner_key):
                    pool.check(profile["gpus"])
            except gpus.NoFreeGpu as e:  # none free, or the pool's lock held too long
                return str(e)
        return ""

    def validate_options(self, options: dict, effective: list[dict]) -> dict:
        """Check a requested profile against ``effective`` (:meth:`effective_profiles`); returns normalised
        options or raises :class:`ProfileError`."""
        refusal = self.account_refusal()
        if refusal:
            raise ProfileError(400, refusal)
        offered = self.offered_profiles(effective)
        slug = (options or {}).get("profile")
        if not slug:
            if not offered:
                raise ProfileError(
                    403, f"No profile is open to you. Ask {self.posehub_config['hub']['admin_contact']} for access."
                )
            slug = offered[0]["slug"]
        profile = next((p for p in effective if p["slug"] == slug), None)
        if profile is None:
            raise ProfileError(400, f"Unknown profile '{slug}'.")
        if profile not in offered:
            raise ProfileError(403, f"You may not use the profile '{profile['display_name']}'. "
                                    f"Ask {self.posehub_config['hub']['admin_contact']} for access.")
        reason = self.unavailable_reason(profile)
        if reason:
            if not environments.is_built(profile["image"]):
                reason += f" Build it on the hub machine with: {environments.build_command(profile['image'])}"
            raise ProfileError(409, reason)
        return {"profile": slug}

    # ------------------------------------------------------------ form

    @property
    def cost_gate(self) -> costs.CostGate:
        return costs.gate_for(self.posehub_config)

    def budget_refusal(self, profile: dict, left=None, groups=None) -> str:
        """Why the budget does not allow ``profile`` now ('' when it does)."""
        groups = self.user_groups() if groups is None else groups
        return self.cost_gate.precheck(self.user.name, groups, profile, left).message

    async def _render_options_form(self, spawner=None) -> str:
        """The spawn form. What needs the hub's database is read here, on the event loop; what needs the ledger
        or the GPU pool's lock is done in a thread (``costs.OffLoop``), so a slow ledger holds up no one else:
        it gets a page saying so."""
        groups, offered = self.user_groups(), self.offered_profiles(await self.effective_profiles())

        def gather():
            left = self.cost_gate.remaining(self.user.name, groups)
            return left, [self.unavailable_reason(p) or self.budget_refusal(p, left, groups) for p in offered]

        try:
            left, reasons = await costs.off_loop().acall(gather)
        except costs.LedgerSlow as e:
            raise ProfileError(503, str(e)) from None
        items = []
        first = True
        for p, unavailable in zip(offered, reasons):
            items.append(
                dict(
                    p,
                    summary=profiles.summary(p),
                    unavailable=unavailable,
                    build_command=(
                        environments.build_command(p["image"]) if not environments.is_built(p["image"]) else ""
                    ),
                    checked=first and not unavailable,
                )
            )
            first = first and bool(unavailable)
        return _templates.get_template("spawn_form.html").render(
            profiles=items,
            admin_contact=self.posehub_config["hub"]["admin_contact"],
            budget=dict(
                period=left.period.label,
                total=costs.money(left.budget.total),
                spent=costs.money(left.spent),
                remaining=costs.money(max(left.remaining, 0)),
                exhausted=left.remaining <= 0,
            ),
            cost_url="/services/cost/",
        )

    def _options_form_default(self):
        return self._render_options_form

    async def options_from_form(self, formdata):
        slug = (formdata.get("profile") or [""])[0]
        if not slug:
            raise ProfileError(400, "Pick a profile to start.")
        effective = await self.effective_profiles()
        options = self.validate_options({"profile": slug}, effective)
        groups = self.user_groups()
        try:
            refusal = await costs.off_loop().acall(self.budget_refusal, self.posehub_config.profile(options["profile"]),
                                                   None, groups)
        except costs.LedgerSlow as e:
            raise ProfileError(503, str(e)) from None
        if refusal:  # shown on the form again, nothing started
            raise ProfileError(403, refusal)
        return options

    # ------------------------------------------------------------ lifecycle

    @property
    def _owner_key(self) -> str:
        return f"{SERVER_OWNER}{self.user.name}/{self.name}"

    def user_env(self, env):
        acct = self._account
        env["USER"] = acct.name if acct else self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        image = self.posehub_config.profile(self.profile_slug)["image"] if self.profile_slug else None
        if image:
            env["PATH"] = f"{environments.env_dir(image) / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
            env["VIRTUAL_ENV"] = str(environments.env_dir(image))
            env["POSEHUB_IMAGE"] = image
            env[desktop.XSTARTUP_ENV] = str(desktop.XSTARTUP)  # the pose image's desktop (posehub.desktop)
        env["POSEHUB_PROFILE"] = self.profile_slug
        env["POSEHUB_COST_URL"] = f"http://127.0.0.1:{self.posehub_config['costs']['port']}/services/cost/"
        if hubapply.watches_on(self.posehub_config):
            env[hubapply.WATCH_URL_ENV] = (f"http://127.0.0.1:{self.posehub_config['watch']['port']}"
                                           f"/services/{hubapply.WATCH_SERVICE}/")
        if self.posehub_config["dask"]["enabled"]:
            env.update(gateway_settings.client_env(self.posehub_config))
            env[gateway_policy.WORKER_PROFILES_ENV] = gateway_policy.profiles_env(
                self.posehub_config, self.user.name, self.user_groups(), bool(self.user.admin), self._effective)
        env[MANIFEST_ENV] = str(workspace.manifest_file(Path(self.home_dir)))
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in self.gpu_indices)
        if self.posehub_config["culling"]["enabled"] and self.profile_slug:
            env.update(culling.server_env(self.posehub_config, self.idle_limit_seconds))
        return env

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return lambda spawner, user_options: spawner.apply_profile(user_options)

    async def apply_profile(self, user_options: dict) -> None:
        """Validate the requested profile (with admins' settings as they are now) and set the server's command,
        limits and idle limit from it."""
        effective = await self.effective_profiles()
        options = self.validate_options(user_options or {}, effective)
        profile = next(p for p in effective if p["slug"] == options["profile"])
        self._effective = effective  # for the worker profiles the workspace is told of (user_env)
        self.profile_slug = profile["slug"]
        self.idle_limit_seconds = culling.idle_limit(self.posehub_config, profile)
        self.cmd = [str(environments.singleuser_command(profile["image"]))]
        self.cpu_guarantee = float(profile["cpu"])
        self.cpu_limit = float(profile["cpu"])
        self.mem_limit = profiles.memory_bytes(profile["memory"])

    def make_preexec_fn(self, name):
        return isolation.preexec_fn(self._sandbox(), self._account, Path(self.home_dir))

    def _sandbox(self) -> cgroups.Sandbox | None:
        if not self.sandbox_state:
            return None
        return isolation.backend(self.posehub_config).restore(self.sandbox_state)

    def get_args(self):
        args = super().get_args()
        if os.geteuid() == 0 and self._account is None:  # one-person mode run as root (tests only)
            args.append("--ServerApp.allow_root=True")
        # budget and idle warnings inside JupyterLab (a prebuilt extension, no build step), and the server's
        # answer to "how long have I been idle" (posehub.labidle)
        args.append(f"--LabApp.extra_labextensions_path={LABEXTENSIONS}")
        args.append("--ServerApp.jpserver_extensions=posehub.labidle=True")
        # workspaces may have no internet: no news feed, no update checks
        args += ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        return args

    async def start(self):
        if not self.profile_slug:  # spawns that bypassed apply_user_options (e.g. restarts)
            await self.apply_profile(self.user_options or {})
        cfg = self.posehub_config
        profile = cfg.profile(self.profile_slug)
        self.gpu_indices = []
        if profile["gpus"]:
            try:
                self.gpu_indices = gpu_pool(cfg).acquire(self._owner_key, profile["gpus"])
            except gpus.NoFreeGpu as e:
                raise ProfileError(409, str(e)) from None
        name, groups = self.user.name, self.user_groups()
        try:
            gate = await costs.off_loop().acall(lambda: self.cost_gate)  # (opening the ledger may wait on it)
            reservation = await asyncio.to_thread(gate.reserve, name, groups, profile,
                                                  timedelta(seconds=self.start_timeout + 60))
        except BudgetExceeded as e:
            self._release_gpus()
            raise ProfileError(403, e.message) from None
        except Exception as e:  # noqa: BLE001 - the ledger is down or does not answer: say so, start nothing
            self._release_gpus()
            self.log.error("budget check of %s failed: %s", name, e)
            raise ProfileError(503, "The cost ledger is not answering just now, so your budget cannot be checked "
                                    "and nothing was started; try again in a minute.") from None
        try:
            self._lease = self._new_lease()
            await asyncio.to_thread(self._make_workspace, profile, groups)
            image = environments.singleuser_command(profile["image"])
            sandbox = self._sandbox()
            self.cmd = sandbox.wrap([str(image)], self._account.uid, self._account.gid) if sandbox else [str(image)]
            url = await super().start()
        except BaseException:
            await self._after_exit(None, None, close_span=False)
            await asyncio.to_thread(gate.release, reservation)
            raise
        await asyncio.to_thread(gate.started, self.user.name, self.name, profile, reservation)
        self._start_renewal()
        return url

    def _make_workspace(self, profile: dict, groups: list[str]) -> None:
        """The account, its home, the server's control group and the buckets (in a thread: useradd, mounts; the
        user's groups come from the hub's database, read on the event loop)."""
        cfg = self.posehub_config
        home = Path(self.home_dir)
        owner = None
        if cfg.isolated:
            try:
                self._account = isolation.account(cfg, self.user.name)
            except accounts.AccountError as e:
                raise ProfileError(400, str(e)) from None
            acct = self._account
            owner = self._owner()
            limits = isolation.profile_limits(cfg, profile, self.gpu_indices)
            sandbox = isolation.backend(cfg).create(isolation.unit_name("server", acct.name, self.name), limits)
            self.sandbox_state = sandbox.state()
        else:
            home.mkdir(parents=True, exist_ok=True)
        lease = self._lease
        data = workspace.prepare(cfg, self.user.name, groups, home, self.log, owner=owner, lease=lease)
        if lease is not None and lease.credentials is not None:
            self.storage_state = {"digest": lease.digest, "groups": list(groups),
                                  "manifest": workspace.with_credentials(data, None)}
        elif lease is not None:  # STS refused (the buckets say so in their notes): nothing to renew
            s3broker.unregister(lease)
            self._lease = None
        quiet_lab_defaults(home, *(owner.uid, owner.gid) if owner else (os.geteuid(), os.getegid()))

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            self._loaded_running = False
            await self._after_exit(None, None)

    async def run_post_stop_hook(self):
        """Runs after every stop, also when the hub found the server dead (then JupyterHub does not
        call ``stop()``): unmount the buckets, free the GPUs, close the span if it is still open.
        A server found dead after a hub restart is closed at its last activity before the restart."""
        end, note = None, "server process ended"
        if self._loaded_running and self._activity_at_load is not None:
            last = self._activity_at_load
            end = last.replace(tzinfo=last.tzinfo or timezone.utc)
            note = "server found stopped after a hub restart; closed at its last activity"
        self._loaded_running = False
        try:
            await self._after_exit(end, note)
        finally:
            result = super().run_post_stop_hook()
            if inspect.isawaitable(result):
                await result

    async def _after_exit(self, end, note, close_span=True):
        """Everything the server started is killed (its whole control group), its buckets unmounted, its GPUs
        given back, then its span closed: nothing runs, and no credential stays mounted, unbilled."""
        self._stop_renewal()
        sandbox = self._sandbox()
        try:
            if sandbox is not None:
                await asyncio.to_thread(sandbox.remove)
                self.sandbox_state = {}
            if self._account is not None:  # its processes are gone: the X files its desktop left in /tmp too
                desktop.remove_leftovers(self.home_dir, self._account.uid, self.name)
            await asyncio.to_thread(workspace.release, self.posehub_config, Path(self.home_dir), self.log)
        finally:
            self._release_gpus()
            if close_span:
                await asyncio.to_thread(self._close_span, end, note)

    def _close_span(self, end, note):
        now = datetime.now(timezone.utc)
        try:
            self.cost_gate.stopped(self.user.name, self.name, end=min(end, now) if end else None, note=note)
        except ValueError:  # the last activity predates the span: close it now
            self.cost_gate.stopped(self.user.name, self.name, note=note)

    # ------------------------------------------------------------ S3 credentials renewed while the server runs

    def _new_lease(self) -> s3broker.Lease | None:
        """A credential lease for a server whose buckets use STS, with the hub's endpoint serving it (on the
        event loop); None where there is nothing to renew or the endpoint cannot be served (said in the log)."""
        b = self.posehub_config["buckets"]
        if b["backend"] != "s3" or not b["sts"]["role_arn"]:
            return None
        try:
            s3broker.serve(b["sts"]["credentials_port"])
        except s3broker.BrokerError as e:
            self.log.error("storage of %s: %s; its mounts keep the credentials they start with", self.user.name, e)
            return None
        lease = s3broker.Lease(self.user.name, role_arn=b["sts"]["role_arn"])
        s3broker.register(lease)
        return lease

    def _start_renewal(self) -> None:
        if self._lease is not None and self._renewal is None:
            self._renewal = asyncio.ensure_future(
                s3broker.keep_renewed(self._lease, self._fetch_credentials, self._publish_credentials, self.log))

    def _stop_renewal(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if self._lease is not None:
            s3broker.unregister(self._lease)
            self._lease = None
        self.storage_state = {}

    def _fetch_credentials(self):
        """New STS credentials for the buckets the server was started with (in a thread)."""
        cfg = self.posehub_config
        accesses = [a for a in s3plan.plan(cfg, self.user.name, self.storage_state.get("groups", [])) if a.uses_sts]
        return s3creds.assume_role(cfg, self.user.name, accesses, cfg["buckets"]["mount"]["timeout_seconds"])

    def _owner(self) -> workspace.Owner | None:
        """The account the workspace belongs to (None: servers run as the hub's own account)."""
        acct = self._account
        if acct is None:
            return None
        return workspace.Owner(acct.uid, acct.gid, accounts.ensure_group(self.posehub_config["isolation"]["group"]))

    def _publish_credentials(self, creds) -> None:
        """The manifest rewritten with ``creds``, as the user's own file (in a thread)."""
        workspace.write_manifest(Path(self.home_dir),
                                 workspace.with_credentials(self.storage_state["manifest"], creds), self._owner())

    async def poll(self):
        status = await super().poll()
        if status is None and self._lease is not None and self._renewal is None:  # running after a hub restart
            try:
                s3broker.serve(self.posehub_config["buckets"]["sts"]["credentials_port"])
            except s3broker.BrokerError as e:
                self.log.error("storage of %s: %s", self.user.name, e)
            self._start_renewal()
        return status

    def _release_gpus(self):
        gpu_pool(self.posehub_config).release(self._owner_key)
        self.gpu_indices = []

    # ------------------------------------------------------------ state across hub restarts

    def get_state(self):
        state = super().get_state()
        state.update(culling.state_of(self.profile_slug, self.idle_limit_seconds))  # the culler's arbiter reads it
        if self.gpu_indices:
            state["gpus"] = list(self.gpu_indices)
        if self.sandbox_state:
            state["sandbox"] = dict(self.sandbox_state)
        if self.storage_state:
            state["storage"] = dict(self.storage_state)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.profile_slug, self.idle_limit_seconds = culling.from_state(state)
        self.gpu_indices = list(state.get("gpus", []))
        self.sandbox_state = dict(state.get("sandbox", {}))
        if self.posehub_config.isolated and self.sandbox_state:
            self._account = accounts.lookup(self.user.name, prefix=self.posehub_config["isolation"]["account_prefix"],
                                            homes_dir=isolation.homes_dir(self.posehub_config))
        self.storage_state = dict(state.get("storage", {}))
        if self.storage_state.get("digest") and self.pid and self._lease is None:
            self._lease = s3broker.Lease(self.user.name, role_arn=self.posehub_config["buckets"]["sts"]["role_arn"],
                                         secret="", digest=self.storage_state["digest"])
            s3broker.register(self._lease)  # the mounts' endpoint answers again once poll() has renewed it
        self._loaded_running = bool(self.pid)
        self._activity_at_load = self.orm_spawner.last_activity if self.orm_spawner is not None else None
        if self.gpu_indices and self.pid:
            gpu_pool(self.posehub_config).restore(self._owner_key, self.gpu_indices)

    def clear_state(self):
        super().clear_state()
        self.profile_slug = ""
        self.gpu_indices = []
        # sandbox_state stays until _after_exit has emptied and removed the group
