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


PROFILE_COLOURS = ["#8ab4d8", "#f2b880", "#9bc89b", "#c9a0dc", "#e8a0a0", "#b0b0b0"]


def user_plot(report: UserReport) -> bytes:
    return _png(user_figure(report))


def user_figure(report: UserReport) -> Figure:
    """The period of one user at a glance: spend per day stacked by profile (bars), the running total
    against the budget line, and the forecast. The axis starts at $0 and reaches past the budget."""
    days = list(report.by_day)
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    bottom = [0.0] * len(days)
    for i, (label, by_day) in enumerate(report.by_profile_day.items()):
        values = [float(by_day.get(d, 0)) for d in days]
        if any(values):
            ax.bar(days, values, bottom=bottom, color=PROFILE_COLOURS[i % len(PROFILE_COLOURS)], label=label)
            bottom = [b + v for b, v in zip(bottom, values)]
    cumulative, running = [], Decimal(0)
    for v in report.by_day.values():
        running += v
        cumulative.append(float(running))
    ax.plot(days, cumulative, color="#1f4e79", label="running total")
    ax.axhline(float(report.budget), color="#b22222", linestyle="--", label=f"budget ${report.budget:.2f}")
    if report.forecast > report.spent:
        ax.axhline(float(report.forecast), color="#e69f00", linestyle=":", label=f"forecast ${report.forecast:.2f}")
    top = max([float(report.budget), float(report.forecast), *cumulative, 0.01])
    ax.set_ylim(0, top * 1.1)
    title = f"{report.user}: ${report.spent:.2f} of ${report.budget:.2f} in {report.period.label}"
    ax.set_title(title if report.spent else f"{report.user}: nothing spent in {report.period.label} yet")
    ax.set_ylabel("US dollars")
    ax.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def admin_plot(report: AdminReport) -> bytes:
    """Every user's spend (bars) against their budget (markers) in the period."""
    users = [r.user for r in report.rows]
    fig = Figure(figsize=(max(6, 0.6 * len(users) + 2), 4))
    ax = fig.add_subplot()
    x = range(len(users))
    ax.bar(x, [float(r.spent) for r in report.rows], color="#8ab4d8", label="spent")
    ax.scatter(x, [float(r.budget) for r in report.rows], marker="_", s=400, color="#b22222", label="budget")
    ax.set_xticks(list(x), users, rotation=45, ha="right")
    ax.set_xlim(-0.7, len(users) - 0.3)  # room for the first and last budget markers
    ax.set_ylim(0, max([*(float(r.budget) for r in report.rows), *(float(r.spent) for r in report.rows), 0.01]) * 1.1)
    ax.set_title(f"Spend by user in {report.period.label}")
    ax.set_ylabel("US dollars")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # beside, never over a bar
    fig.tight_layout()
    return _png(fig)
