"""What the ensemble widget checks and shows, without widgets: pure functions, unit-tested.

* :func:`worker_profiles` -- the worker profiles of this workspace (``POSEHUB_WORKER_PROFILES``, set by
  the hub from the profiles the user may use);
* :func:`check` -- the form's values -> a :class:`Request`, or the list of what is wrong (nothing starts);
* :func:`budget_line` / :func:`cost_so_far` -- the sentences about money.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

FRAMEWORKS = {"sleap": "SLEAP (U-Net)", "dlc": "DeepLabCut (ResNet-50)"}
MAX_MEMBERS = 32


def worker_profiles(environ=os.environ) -> list[dict]:
    """The worker profiles the user may use, default first; [] outside a PoseHub workspace."""
    raw = environ.get("POSEHUB_WORKER_PROFILES", "")
    if not raw:
        return []
    try:
        profiles = json.loads(raw)
    except ValueError:
        return []
    return [p for p in profiles if isinstance(p, dict) and p.get("slug")]


def profile_label(p: dict) -> str:
    gpus = f" · {p['gpus']} GPU" if p.get("gpus") else ""
    return f"{p.get('display_name') or p['slug']} ({p.get('cpu', 1):g} CPU · {p.get('memory', '')}{gpus} · " \
           f"${float(p.get('price_per_hour') or 0):.2f}/h per worker)"


@dataclass(frozen=True)
class Request:
    """A checked form: what :func:`posehub.ensemble.train_ensemble` and the cluster get."""

    labels: tuple[str, str]  # (bucket, path)
    framework: str
    members: int
    epochs: int
    profile: dict
    video: tuple[str, str] | None = None
    video_frames: int = 0
    params: dict = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return self.members


def _int(value, name: str, low: int, high: int, errors: list[str]):
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            errors.append(f"{name} must be a whole number from {low} to {high}, got {value!r}")
            return None
    if not low <= value <= high:
        errors.append(f"{name} must be from {low} to {high}, got {value}")
        return None
    return value


def check(*, labels, framework, members, epochs, profile, profiles: list[dict], video=None, video_frames=0,
          params: dict | None = None, max_members: int = MAX_MEMBERS) -> tuple[Request | None, list[str]]:
    """The form's values -> (Request, []) or (None, [what is wrong, ...])."""
    errors: list[str] = []
    if not labels or not isinstance(labels, (tuple, list)) or len(labels) != 2:
        errors.append("Labels: pick a labels file (a DeepLabCut CollectedData_*.csv or a SLEAP .slp) "
                      "from your buckets")
        labels = None
    if framework not in FRAMEWORKS:
        errors.append(f"Framework: pick one of {', '.join(FRAMEWORKS.values())}, got {framework!r}")
    n = _int(members, "Members", 1, max_members, errors)
    e = _int(epochs, "Epochs", 1, 10000, errors)
    vf = _int(video_frames, "Video frames", 0, 500, errors) if video else 0
    slugs = {p["slug"]: p for p in profiles}
    if not slugs:
        errors.append("Worker profile: no worker profile is open to you (or this is not a PoseHub workspace): "
                      "ask your PoseHub admin")
    elif profile not in slugs:
        errors.append(f"Worker profile: pick one of {', '.join(slugs)}, got {profile!r}")
    if errors:
        return None, errors
    return Request(tuple(labels), framework, n, e, slugs[profile], tuple(video) if video else None, vf,
                   {**(params or {}), "epochs": e}), []


def money(x) -> str:
    return f"${float(x):,.2f}"


def budget_line(status: dict | None) -> str:
    """The user's budget, from the cost service (``posehub.account.status()``)."""
    if not status:
        return "Budget: unknown (the cost service did not answer)"
    return (f"Budget for {status['period']}: {money(status['remaining'])} left of {money(status['budget'])} "
            f"({status['percent_used']} % used)")


def cost_so_far(worker_seconds: float, price_per_hour: float) -> str:
    return f"{money(worker_seconds / 3600 * price_per_hour)} so far ({worker_seconds / 60:.1f} worker-minutes)"
