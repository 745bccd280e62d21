"""My budget and spend, from inside a workspace (notebooks, the ensemble widget).

The spawner gives each server the cost service's address (``POSEHUB_COST_URL``);
the server's own hub token (``JUPYTERHUB_API_TOKEN``) may reach that service and
see its own user's figures only. ::

    from posehub import account
    account.status()     # {'budget': '300.00', 'spent': '1.20', 'remaining': '298.80', 'level': '', ...}
    account.report()     # spend this period by profile and by day, forecast to period end
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request

URL_ENV = "POSEHUB_COST_URL"


class AccountError(Exception):
    pass


def _get(path: str, timeout: float = 15) -> dict:
    base = os.environ.get(URL_ENV)
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not base or not token:
        raise AccountError("no cost service in this environment: budgets are read from inside a PoseHub workspace "
                           f"(${URL_ENV} and $JUPYTERHUB_API_TOKEN are set by the hub)")
    req = urllib.request.Request(base.rstrip("/") + "/" + path.lstrip("/"),
                                 headers={"Authorization": f"token {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:300]
        raise AccountError(f"the cost service answered {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise AccountError(f"the cost service at {base} cannot be reached: {getattr(e, 'reason', e)}") from None


def user() -> str:
    return os.environ.get("JUPYTERHUB_USER", "")


def status() -> dict:
    """Budget, spent, remaining (strings of dollars), percent used, warning level of this period."""
    return _get("api/status")


def report(period: str | None = None) -> dict:
    """This user's report: budget, spent, remaining, forecast, by_profile, by_day."""
    q = "?" + urllib.parse.urlencode({"period": period}) if period else ""
    return _get(f"api/users/{urllib.parse.quote(user())}/report{q}")
