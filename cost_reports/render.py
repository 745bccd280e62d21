"""Reports as CSV, JSON and HTML text (pure). Plots are in :mod:`cost_reports.plot`.

Money is written as decimal strings with two decimals ("12.30"), never floats;
times as ISO 8601 UTC; a percentage of a zero budget as empty/null/"n/a".
"""

from __future__ import annotations

import csv
import re
import io
import json
from html import escape

from .reports import AdminReport, UserReport

ADMIN_COLUMNS = ["user", "spent", "budget", "remaining", "percent_used", "forecast"]


def _money(d) -> str:
    return f"{d:.2f}"


def _pct(p) -> str | None:
    return None if p is None else f"{p:.1f}"


# ------------------------------------------------------------ admin


def _admin_dicts(report: AdminReport) -> list[dict]:
    return [
        {"user": r.user, "spent": _money(r.spent), "budget": _money(r.budget), "remaining": _money(r.remaining),
         "percent_used": _pct(r.percent_used), "forecast": _money(r.forecast)}
        for r in report.rows
    ]


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def csv_cell(value) -> str:
    """A cell a spreadsheet shows as text: one that starts with =, +, -, @, tab or CR and is not a plain number
    gets a leading ' (OWASP's advice on CSV injection), so opening the file runs no formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.match(text):
        return "'" + text
    return text


def admin_csv(report: AdminReport) -> str:
    """One header line, then one line per user (columns: :data:`ADMIN_COLUMNS`)."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=ADMIN_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in _admin_dicts(report):
        w.writerow({k: csv_cell(v) for k, v in row.items()})
    return out.getvalue()


def admin_json(report: AdminReport) -> str:
    return json.dumps({
        "period": report.period.label, "start": report.period.start.isoformat(), "end": report.period.end.isoformat(),
        "generated_at": report.now.isoformat(), "total_spent": _money(report.total_spent),
        "total_budget": _money(report.total_budget), "forecast_method": report.forecast_method,
        "users": _admin_dicts(report),
    }, indent=2)


def admin_html(report: AdminReport) -> str:
    """An HTML fragment (a table); the service puts it in its page template."""
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in ADMIN_COLUMNS)
    body = []
    for row in _admin_dicts(report):
        cells = "".join(
            f'<td class="{c}">{escape(row[c] if row[c] is not None else "n/a")}</td>' for c in ADMIN_COLUMNS
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="cost-admin" data-period="{escape(report.period.label)}">\n'
        f"<caption>Spend in {escape(report.period.label)}: ${_money(report.total_spent)} "
        f"of ${_money(report.total_budget)} budgeted</caption>\n"
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n"
    )


# ------------------------------------------------------------ one user


def _user_dict(report: UserReport) -> dict:
    return {
        "user": report.user, "period": report.period.label, "start": report.period.start.isoformat(),
        "end": report.period.end.isoformat(), "generated_at": report.now.isoformat(),
        "budget": _money(report.budget), "spent": _money(report.spent), "remaining": _money(report.remaining),
        "percent_used": _pct(report.percent_used), "forecast": _money(report.forecast),
        "forecast_method": report.forecast_method,
        "by_profile": {k: _money(v) for k, v in report.by_profile.items()},
        "by_day": {d.isoformat(): _money(v) for d, v in report.by_day.items()},
    }


def user_json(report: UserReport) -> str:
    return json.dumps(_user_dict(report), indent=2)


def user_csv(report: UserReport) -> str:
    """Rows ``section,key,amount``: the summary, then spend per profile, then per day."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    rows = [["section", "key", "amount"]]
    rows += [["summary", k, _money(getattr(report, k))] for k in ("budget", "spent", "remaining", "forecast")]
    rows += [["profile", k, _money(v)] for k, v in report.by_profile.items()]
    rows += [["day", d.isoformat(), _money(v)] for d, v in report.by_day.items()]
    for row in rows:
        w.writerow([csv_cell(c) for c in row])
    return out.getvalue()


def user_html(report: UserReport) -> str:
    """An HTML fragment: summary, spend by profile, spend by day."""
    d = _user_dict(report)
    pct = f" ({d['percent_used']} %)" if d["percent_used"] is not None else ""
    summary = (
        f'<dl class="cost-summary"><dt>Budget</dt><dd>${d["budget"]}</dd>'
        f'<dt>Spent</dt><dd>${d["spent"]}{escape(pct)}</dd>'
        f'<dt>Remaining</dt><dd>${d["remaining"]}</dd>'
        f'<dt>Forecast for the period</dt><dd title="{escape(report.forecast_method)}">${d["forecast"]}</dd></dl>'
    )
    # every profile used (even for less than a cent), only the days that cost something: a period with
    # nothing used says so instead of a column of $0.00
    prof = "".join(f"<tr><td>{escape(k)}</td><td>${_money(v)}</td></tr>" for k, v in report.by_profile.items())
    days = "".join(f"<tr><td>{k.isoformat()}</td><td>${_money(v)}</td></tr>" for k, v in report.by_day.items() if v)
    if not prof:
        tables = f'<p class="no-spend">Nothing spent in {escape(report.period.label)} yet.</p>\n'
    else:
        tables = (f'<table class="by-profile"><thead><tr><th>profile</th><th>spent</th></tr></thead>'
                  f"<tbody>{prof}</tbody></table>\n")
        if days:
            tables += (f'<table class="by-day"><thead><tr><th>day</th><th>spent</th></tr></thead>'
                       f"<tbody>{days}</tbody></table>\n")
    return (
        f'<section class="cost-user" data-user="{escape(report.user)}" data-period="{escape(report.period.label)}">\n'
        f"<h2>{escape(report.user)}: {escape(report.period.label)}</h2>\n{summary}\n{tables}"
        "</section>\n"
    )
