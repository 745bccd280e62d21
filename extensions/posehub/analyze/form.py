"""What the widget's "Analyse videos" tab checks and shows, without widgets: pure functions, unit-tested.

* :func:`check` -- the tab's fields -> a :class:`Request`, or the list of what is wrong (nothing starts);
* :func:`budget_refusal` -- the sentence refusing an analysis whose estimate is more than the budget left;
* :func:`progress_rows` / :func:`result_rows` / :func:`table_html` -- the progress and results tables;
* :func:`mounted_path` / :func:`model_from_ensemble` -- the ensemble folder to prefill
  from a finished ensemble: its consensus is not one model (it combines the members' predictions), so the tab
  analyses with the member of the lowest test error, at the path the workers see (under ``~/buckets``);
* :class:`Watches` -- the "Watches" section: the user's watched folders through a watch client
  (:mod:`posehub.watch.client` or a fake), pause, resume, create; every error is a message, never a crash.

Imports nothing heavy: the tab's widget code (:mod:`posehub.ensemble.widget`) does the rest.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ..ensemble.form import _int, money

MAX_WORKERS = 32
VIDEOS_HINT = "a video, a folder of videos or a glob, e.g. ~/buckets/lab/videos/*.mp4"
MODEL_HINT = "the folder of a PoseHub run (with model.json), e.g. ~/buckets/home/ensembles/<id>/member-0"


@dataclass(frozen=True)
class Request:
    """A checked tab: what :func:`posehub.analyze.analyze` and the cluster get."""

    model: str
    videos: str | list[str]
    out: str | None
    profile: dict
    workers: int
    overwrite: bool = False


def split_videos(text) -> str | list[str]:
    """One path or glob per line: several lines are a list."""
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return lines[0] if len(lines) == 1 else lines


def _profile(profile, profiles: list[dict], errors: list[str]) -> dict | None:
    slugs = {p["slug"]: p for p in profiles}
    if not slugs:
        errors.append("Worker profile: no worker profile is open to you (or this is not a PoseHub workspace): "
                      "ask your PoseHub admin")
    elif profile not in slugs:
        errors.append(f"Worker profile: pick one of {', '.join(slugs)}, got {profile!r}")
    return slugs.get(profile)


def check(*, model, videos, out, profile, profiles: list[dict], workers, overwrite: bool = False,
          max_workers: int = MAX_WORKERS) -> tuple[Request | None, list[str]]:
    """The tab's values -> (Request, []) or (None, [what is wrong, ...]). The files themselves are checked
    next, by :func:`posehub.analyze.plan.make_plan`."""
    errors: list[str] = []
    model = str(model or "").strip()
    if not model:
        errors.append(f"Model: give {MODEL_HINT}")
    elif "://" in model:
        errors.append(f"Model: give the run folder as a path the workers see (under ~/buckets), not a URL: {model}")
    vids = split_videos(videos)
    if not vids:
        errors.append(f"Videos: give {VIDEOS_HINT}")
    out = str(out or "").strip() or None
    n = _int(workers, "Workers", 1, max_workers, errors)
    p = _profile(profile, profiles, errors)
    if errors:
        return None, errors
    return Request(model, vids, out, p, n, bool(overwrite)), []


GLOB_CHARS = "*?["


def _blocked(path: str) -> str | None:
    """The first folder on the way to ``path`` this account may not enter, or ``path`` itself when it may not
    read it; None when nothing is in the way (a path that does not exist is for :mod:`~.plan` to say)."""
    parts = Path(path).parts
    if not parts:
        return None
    cur = Path(parts[0])
    for part in parts[1:]:
        nxt = cur / part
        try:
            os.stat(nxt)
        except PermissionError:
            return str(cur)
        except OSError:
            return None
        cur = nxt
    if os.path.isdir(cur):
        return None if os.access(cur, os.R_OK | os.X_OK) else str(cur)
    return None if os.access(cur, os.R_OK) else str(cur)


def access_problems(model: str, videos) -> list[str]:
    """The model folder and the videos (paths, folders or globs) this account may not read: another account's
    home, a folder of mode 0700, a file of mode 0600. Said as that, where the plan's checks would only find no
    such file or no match."""
    out = []
    m = _blocked(os.path.abspath(os.path.expanduser(str(model)))) if model else None
    if m:
        out.append(f"model folder {model}: you may not read {m} (it is another account's, or its permissions keep "
                   "you out)")
    for v in [videos] if isinstance(videos, str) else list(videos or []):
        path = os.path.abspath(os.path.expanduser(str(v)))
        parts = Path(path).parts
        glob_at = next((i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS)), None)
        base = str(Path(*parts[:glob_at])) if glob_at is not None else path
        b = _blocked(base)
        if b:
            out.append(f"videos {v}: you may not read {b} (it is another account's, or its permissions keep you "
                       "out)")
    return out


def _decimal(x) -> Decimal | None:
    try:
        d = Decimal(str(x))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return d if d.is_finite() else None


def budget_refusal(cost, status: dict | None) -> str:
    """'' when an analysis estimated at ``cost`` dollars fits what is left of the budget (``account.status()``);
    else the sentence that refuses it. An unknown budget does not refuse: the gateway checks the budget again
    when the cluster starts."""
    left = _decimal((status or {}).get("remaining"))
    cost = _decimal(cost)
    if left is None or cost is None or cost <= left:
        return ""
    period = f" for {status['period']}" if status.get("period") else ""
    return (f"Nothing was started: the estimate, {money(cost)}, is more than what is left of your budget{period}, "
            f"{money(left)}. Analyse fewer videos, pick a cheaper worker profile, or ask your PoseHub admin for "
            "more budget.")


def budget_note(status: dict | None) -> str:
    """Said beside the estimate when the budget is unknown."""
    if _decimal((status or {}).get("remaining")) is None:
        return "Budget unknown (the cost service did not answer): the gateway checks it when the cluster starts."
    return ""


def unreadable_note(plan) -> str:
    """The videos of a plan that cannot be read (analysed without them), or ''."""
    bad = [v for v in plan.videos if v.error]
    if not bad:
        return ""
    return (f"{len(bad)} of {len(plan.videos)} video(s) cannot be read and will be reported as failed: "
            + "; ".join(v.error for v in bad))


# ------------------------------------------------------------------ tables


def _name(path: str) -> str:
    return os.path.basename(str(path)) or str(path)


def progress_rows(progress: list[dict]) -> list[dict]:
    """Per video of ``Analysis.progress()``: state, chunks done, frames done, workers, error."""
    return [{"video": p.get("name") or _name(p.get("video", "")), "state": p.get("status", ""),
             "chunks done": f"{p.get('chunks_done', 0)}/{p.get('chunks', 0)}",
             "frames done": f"{p.get('frames_done', 0):,}/{p.get('frames', 0):,}",
             "workers": len(p.get("workers") or []), "error": p.get("error", "")} for p in progress]


def _fmt(x, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(x) else f"{x * scale:{spec}}{suffix}"


def result_rows(results) -> list[dict]:
    """Per :class:`~posehub.analyze.outputs.VideoResult`: video, status, frames, mean confidence, share of
    low-confidence frames, output files (one per line), error."""
    return [{"video": _name(r.video), "status": r.status, "frames": int(r.frames or 0),
             "mean confidence": _fmt(r.mean_confidence, ".3f"),
             "low-confidence share": _fmt(r.low_confidence_share, ".1f", 100, " %"),
             "output files": "\n".join(str(f) for f in (r.files or {}).values()), "error": r.error or ""}
            for r in results]


def done_line(results, cancel_confirmed: bool | None = None) -> str:
    """The sentence at the end of an analysis: how many videos were analysed, failed, cancelled; after Cancel
    (``cancel_confirmed`` not None) whether every chunk confirmed it stopped."""
    n = len(results)
    done = sum(r.status == "done" for r in results)
    failed = sum(r.status == "failed" for r in results)
    cancelled = n - done - failed
    counts = f"{done} of {n} video(s) analysed" + (f", {failed} failed" if failed else "") + \
        (f", {cancelled} cancelled" if cancelled else "")
    if cancel_confirmed is None and not cancelled:
        return f"Done: {counts}. The files are listed per video below."
    stopped = ("every chunk stopped" if cancel_confirmed or cancel_confirmed is None else
               "some workers did not confirm in time (the cluster is shut down anyway)")
    return f"Cancelled: {counts}; {stopped}. The videos already written are kept (listed below)."


def table_html(rows: list[dict], css: str = "", columns: list[str] | None = None) -> str:
    """An HTML table of ``rows`` (every cell escaped; new lines in a cell become line breaks)."""
    if not rows:
        return ""
    columns = columns or [c for c in rows[0] if any(r.get(c) not in ("", None) for r in rows) or c != "error"]

    def cell(v) -> str:
        return html.escape(str(v)).replace("\n", "<br>")

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return (f"<table class='{html.escape(css)}' style='border-collapse:collapse'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


# ------------------------------------------------------------------ the model of a finished ensemble


def mounted_path(url: str, buckets: dict) -> str | None:
    """Where a folder of the user's buckets (``s3://bucket/prefix/...`` or a local folder) is for the workers:
    its path under the bucket's mount (``~/buckets/<name>/...``); a local folder as it is; None when no mounted
    bucket holds it."""
    url = str(url or "")
    if not url:
        return None
    if "://" not in url:
        return url
    for b in buckets.values():
        base = str(getattr(b, "url", "") or "")
        if not base.startswith("s3://") or not getattr(b, "mounted", False) or not getattr(b, "path", ""):
            continue
        base = base.rstrip("/") + "/"
        if url.rstrip("/") + "/" == base:
            return str(b.path)
        if url.startswith(base):
            return os.path.join(str(b.path), url[len(base):].strip("/"))
    return None


def model_from_ensemble(result, buckets: dict) -> tuple[str, str]:
    """(the ensemble's folder to prefill: the analysis predicts with every finished member and takes their
    consensus, the sentence saying so) for a finished ensemble; ("", why) when it cannot be used."""
    done = [m for m in result.members if m.status == "done" and m.url]
    if not done:
        return "", f"No member of ensemble {result.id} finished: give a run folder."
    path = mounted_path(getattr(result, "dest", ""), buckets)
    if path is None:
        return "", (f"Ensemble {result.id} is at {result.dest}, which the workers do not see as a folder (its bucket "
                    "is not mounted): give a run or ensemble folder under ~/buckets.")
    return path, (f"Ensemble {result.id}: every frame is predicted by its {len(done)} finished member(s) and "
                  "their consensus is kept (the confidence-weighted median of their points).")


# ------------------------------------------------------------------ watched folders


class WatchUnavailable(Exception):
    """No watch client in this PoseHub."""


class _NoWatchClient:
    """Stands in for :mod:`posehub.watch.client` where it cannot be imported: every call says so."""

    WatchError = WatchUnavailable

    def __init__(self, why: str):
        self.why = why

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise WatchUnavailable(f"watched folders are not available in this PoseHub ({self.why})")

        return call


def default_watch_client():
    """:mod:`posehub.watch.client`, or a stand-in whose every call says why it cannot be used."""
    try:
        from ..watch import client
    except Exception as e:  # noqa: BLE001 - an older PoseHub, or a broken install: said, not raised
        return _NoWatchClient(f"{type(e).__name__}: {e}")
    return client


def _counts(c: dict | None) -> str:
    c = c or {}
    return " · ".join(f"{int(c.get(k) or 0)} {k}" for k in ("done", "failed", "queued", "running"))


def watch_rows(watches: list[dict]) -> list[dict]:
    """Per watched folder: id, folder (bucket/prefix), model, profile, output, state (and why), counts, and the
    action its button offers ("Pause" for an active one, "Resume" for a paused one)."""
    rows = []
    for wt in watches:
        state = str(wt.get("state", ""))
        reason = str(wt.get("reason") or "")
        rows.append({"id": wt.get("id"), "folder": f"{wt.get('bucket', '')}/{str(wt.get('prefix') or '').lstrip('/')}",
                     "model": str(wt.get("model", "")), "profile": str(wt.get("profile", "")),
                     "output": str(wt.get("out_prefix") or ""),
                     "state": f"{state} ({reason})" if reason else state, "videos": _counts(wt.get("counts")),
                     "action": {"active": "Pause", "paused": "Resume"}.get(state, "")})
    return rows


def check_watch(*, bucket, prefix, model, profile, profiles: list[dict], out_prefix) -> tuple[dict | None, list[str]]:
    """The "Watch a folder" form -> (the arguments of ``create_watch``, []) or (None, [what is wrong])."""
    errors: list[str] = []
    bucket = str(bucket or "").strip()
    prefix = str(prefix or "").strip()
    model = str(model or "").strip()
    out_prefix = str(out_prefix or "").strip()
    if not bucket:
        errors.append("Bucket: pick the bucket whose new videos are analysed")
    if not model:
        errors.append(f"Model: give {MODEL_HINT}")
    p = _profile(profile, profiles, errors)
    if not out_prefix:
        errors.append("Output prefix: give where the analyses go (a prefix in the bucket, e.g. analyses/)")
    if errors:
        return None, errors
    return {"bucket": bucket, "prefix": prefix, "model": model, "profile": p["slug"], "out_prefix": out_prefix}, []


class Watches:
    """The "Watches" section's data and calls, without widgets. ``watches`` is the last list; after each call
    ``message`` says what happened and ``error`` whether it failed. A :class:`WatchError` of the client (its
    message is for the user) is shown as it is; anything else with its type; nothing is raised."""

    def __init__(self, client=None):
        self.client = client if client is not None else default_watch_client()
        self.watches: list[dict] = []
        self.message = ""
        self.error = False
        self.loaded = False

    def _call(self, what: str, name: str, *args):
        self.error = False
        try:
            return True, getattr(self.client, name)(*args)
        except Exception as e:  # noqa: BLE001 - the service may be absent: said, never raised
            self.error = True
            known = getattr(self.client, "WatchError", None)
            text = str(e) if isinstance(known, type) and isinstance(e, known) or isinstance(e, WatchUnavailable) \
                else f"{type(e).__name__}: {e}"
            self.message = f"{what}: {text}"
            return False, None

    def refresh(self) -> bool:
        ok, got = self._call("Could not list your watched folders", "list_watches")
        if ok:
            self.watches, self.loaded = list(got or []), True
            self.message = "" if self.watches else "You watch no folder yet."
        return ok

    def rows(self) -> list[dict]:
        return watch_rows(self.watches)

    def _replace(self, got) -> None:
        if isinstance(got, dict) and got.get("id") is not None:
            self.watches = [got if wt.get("id") == got["id"] else wt for wt in self.watches]
            if not any(wt.get("id") == got["id"] for wt in self.watches):
                self.watches.append(got)

    def _folder(self, watch_id) -> str:
        wt = next((x for x in self.watches if x.get("id") == watch_id), {})
        return f"{wt.get('bucket', '')}/{str(wt.get('prefix') or '').lstrip('/')}" if wt else f"watch {watch_id}"

    def pause(self, watch_id) -> bool:
        ok, got = self._call(f"Could not pause {self._folder(watch_id)}", "pause_watch", watch_id)
        if ok:
            self._replace(got)
            self.message = f"Paused {self._folder(watch_id)}: its new videos wait until you resume it."
        return ok

    def resume(self, watch_id) -> bool:
        ok, got = self._call(f"Could not resume {self._folder(watch_id)}", "resume_watch", watch_id)
        if ok:
            self._replace(got)
            self.message = f"Resumed {self._folder(watch_id)}."
        return ok

    def act(self, watch_id, action: str) -> bool:
        """The row's button: "Pause" or "Resume"."""
        return self.pause(watch_id) if action == "Pause" else self.resume(watch_id)

    def create(self, *, bucket, prefix, model, profile, profiles: list[dict], out_prefix) -> bool:
        args, errors = check_watch(bucket=bucket, prefix=prefix, model=model, profile=profile, profiles=profiles,
                                   out_prefix=out_prefix)
        if errors:
            self.error, self.message = True, "Nothing was watched:\n" + "\n".join(f"• {e}" for e in errors)
            return False
        ok, got = self._call(f"Could not watch {args['bucket']}/{args['prefix']}", "create_watch", args["bucket"],
                             args["prefix"], args["model"], args["profile"], args["out_prefix"])
        if ok:
            self._replace(got)
            self.message = (f"Watching {args['bucket']}/{args['prefix']}: each new video there is analysed with "
                            f"{args['model']} on '{args['profile']}' workers, into {args['out_prefix']}.")
        return ok
