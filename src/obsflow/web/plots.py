"""The status page's plots as PNG bytes (matplotlib Agg, no pyplot: safe in server threads).

Each function takes the data :mod:`obsflow.web.status` already gathered, so the page, the JSON
API and the plot always show the same numbers.  No data still gives an image that says so.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure

__all__ = ["bytes_per_day_png", "fill_latency_png"]

_UNITS = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "bytes"))


def _figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=90)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _empty(figure: Figure, message: str) -> bytes:
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#666")
    return _png(figure)


def _unit(peak: float) -> tuple[float, str]:
    return next(((scale, name) for scale, name in _UNITS if peak >= scale), (1.0, "bytes"))


def bytes_per_day_png(per_day: dict[str, Any]) -> bytes:
    """Bars of bytes copied per day and instrument, one panel per hop (``sync_status()["bytes_per_day"]``)."""
    dates = [datetime.fromisoformat(d) for d in per_day["dates"]]
    hops: dict[str, dict[str, list[int]]] = per_day["hops"]
    figure = _figure(10, 1.2 + 2.4 * max(1, len(hops)))
    if not hops:
        return _empty(figure, "no sync runs yet")
    peak = max((max(series) for hop in hops.values() for series in hop.values()), default=0)
    scale, unit = _unit(float(peak))
    axes = figure.subplots(len(hops), 1, squeeze=False, sharex=True)[:, 0]
    x = np.arange(len(dates))
    for ax, (hop, series) in zip(axes, sorted(hops.items()), strict=True):
        width = 0.8 / max(1, len(series))
        for i, (instrument, values) in enumerate(sorted(series.items())):
            ax.bar(x - 0.4 + width * (i + 0.5), np.asarray(values) / scale, width=width, label=instrument)
        ax.set_title(f"hop {hop}", fontsize=10, loc="left", y=1.0)
        ax.set_ylabel(f"copied ({unit})", fontsize=9)
        copied_any = any(any(values) for values in series.values())
        ax.set_ylim(0, None if copied_any else 1.0)  # nothing copied: a flat zero, not -0.04..0.04
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncols=min(4, len(series)))
    step = max(1, len(dates) // 10)
    axes[-1].set_xticks(x[::step], [d.strftime("%m-%d") for d in dates[::step]], fontsize=8)
    axes[-1].set_xlabel("date of the sync run", fontsize=9)
    figure.subplots_adjust(left=0.08, right=0.98, top=0.93, bottom=0.6 / figure.get_figheight(), hspace=0.45)
    return _png(figure)


def fill_latency_png(history: list[dict[str, Any]]) -> bytes:
    """Seconds from scan end to fill done, and the fill itself, over time (``status.fill_history()``)."""
    figure = _figure(10, 3.4)
    if not history:
        return _empty(figure, "no fills yet")
    ax = figure.add_subplot()
    times = [datetime.fromtimestamp(r["filled_at"]) for r in history]
    ax.plot(times, [r["latency_s"] for r in history], "o-", markersize=3, linewidth=0.8,
            label="scan end -> filled (s)")  # fmt: skip
    seconds = [(t, r["seconds"]) for t, r in zip(times, history, strict=True) if r.get("seconds") is not None]
    if seconds:
        ax.plot([t for t, _ in seconds], [s for _, s in seconds], "s", markersize=2.5, color="#999",
                label="writing the fill (s)")  # fmt: skip
    ax.xaxis.set_major_locator(AutoDateLocator())
    span_s = history[-1]["filled_at"] - history[0]["filled_at"]
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S" if span_s < 3600 else "%m-%d %H:%M"))
    ax.tick_params(labelsize=8)
    ax.set_ylabel("seconds", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("fill latency", fontsize=10, loc="left", y=1.0)
    figure.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.16)
    return _png(figure)
