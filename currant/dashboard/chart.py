"""The overview's throughput chart, as SVG geometry (no JavaScript).

Per minute of the last hour: jobs enqueued and jobs finished side by side,
and a red mark above any minute in which jobs failed for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WIDTH = 720
HEIGHT = 160
TOP = 14  # room for failure marks
BOTTOM = 18  # room for the time axis


def throughput(series: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Bars and marks in SVG user units for ``series`` (oldest minute first)."""
    peak = max([1, *(max(p["enqueued"], p["finished"]) for p in series)])
    plot = HEIGHT - TOP - BOTTOM
    slot = WIDTH / max(1, len(series))
    bar = max(1.0, slot / 2 - 1)
    bars, marks, labels = [], [], []
    for i, point in enumerate(series):
        x = i * slot
        for offset, kind in ((0.0, "enqueued"), (bar, "finished")):
            h = plot * point[kind] / peak
            bars.append(
                {
                    "kind": kind,
                    "x": round(x + offset, 1),
                    "y": round(TOP + plot - h, 1),
                    "w": round(bar, 1),
                    "h": round(h, 1),
                    "title": f"{point['minute']:%H:%M} UTC: {point[kind]:,} {kind}",
                }
            )
        if point["failed"]:
            marks.append(
                {
                    "x": round(x + bar, 1),
                    "y": TOP - 4,
                    "title": f"{point['minute']:%H:%M} UTC: {point['failed']:,} failed",
                }
            )
        if i % 10 == 0:
            labels.append({"x": round(x, 1), "text": f"{point['minute']:%H:%M}"})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "bars": bars,
        "marks": marks,
        "labels": labels,
        "peak": peak,
        "axis_y": HEIGHT - BOTTOM,
        "label_y": HEIGHT - 4,
    }
