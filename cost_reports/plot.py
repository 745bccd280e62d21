"""Plots of reports as PNG bytes (matplotlib, Agg canvas; no pyplot, so thread-safe)."""

from __future__ import annotations

import io
from decimal import Decimal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .reports import AdminReport, UserReport


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def user_plot(report: UserReport) -> bytes:
    """The period of one user: spend per day (bars), cumulative spend, budget and forecast lines."""
    days = list(report.by_day)
    daily = [float(v) for v in report.by_day.values()]
    cumulative, running = [], Decimal(0)
    for v in report.by_day.values():
        running += v
        cumulative.append(float(running))
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    ax.bar(days, daily, color="#8ab4d8", label="per day")
    ax.plot(days, cumulative, color="#1f4e79", label="cumulative")
    ax.axhline(float(report.budget), color="#b22222", linestyle="--", label=f"budget ${report.budget:.2f}")
    ax.axhline(float(report.forecast), color="#e69f00", linestyle=":", label=f"forecast ${report.forecast:.2f}")
    ax.set_title(f"{report.user}: spend in {report.period.label}")
    ax.set_ylabel("US dollars")
    ax.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def admin_plot(report: AdminReport) -> bytes:
    """Every user's spend (bars) against their budget (markers) in the period."""
    users = [r.user for r in report.rows]
    fig = Figure(figsize=(max(6, 0.6 * len(users) + 2), 4))
    ax = fig.add_subplot()
    x = range(len(users))
    ax.bar(x, [float(r.spent) for r in report.rows], color="#8ab4d8", label="spent")
    ax.scatter(x, [float(r.budget) for r in report.rows], marker="_", s=400, color="#b22222", label="budget")
    ax.set_xticks(list(x), users, rotation=45, ha="right")
    ax.set_title(f"Spend by user in {report.period.label}")
    ax.set_ylabel("US dollars")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return _png(fig)
