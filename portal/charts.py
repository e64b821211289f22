"""Chart figures built as plain dicts in Plotly's JSON form, embedded with json_script.

Pure functions: data in, figure dict out. The browser only draws them and extends their traces
with the points the websocket sends. The dicts are written directly rather than through
`plotly.graph_objects`, whose validation took about 30 ms per figure (most of a job page's time)
and which embedded its 7 KB default template in every figure; plotly.js draws the same traces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Point = tuple[str, float]  # ISO time, value

LAYOUT: dict[str, Any] = {
    "margin": {"l": 48, "r": 12, "t": 36, "b": 36},
    "height": 260,
    "legend": {"orientation": "h", "y": -0.2},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "xaxis": {"type": "date", "gridcolor": "#e5e7eb"},
    "yaxis": {"gridcolor": "#e5e7eb", "rangemode": "tozero"},
}


def trace(kind: str, **props: Any) -> dict[str, Any]:
    """One trace of the given type (`scatter`, `bar`, `heatmap`, `pie`, ...) with its properties."""
    return {"type": kind, **props}


def figure(traces: Sequence[dict[str, Any]], layout: Mapping[str, Any]) -> dict[str, Any]:
    return {"data": list(traces), "layout": dict(layout)}


def line_figure(
    title: str,
    y_title: str,
    series: Mapping[str, Sequence[Point]],
    y_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One line per series, in the order given; trace names are the series keys."""
    traces = [
        trace("scatter", x=[t for t, _ in points], y=[v for _, v in points], name=name, mode="lines", line={"width": 1.5})
        for name, points in series.items()
    ]
    layout = {**LAYOUT, "title": {"text": title, "font": {"size": 14}}, "yaxis": {**LAYOUT["yaxis"], "title": y_title}}
    if y_range is not None:
        layout["yaxis"] = {**layout["yaxis"], "range": list(y_range), "rangemode": "normal"}
    return figure(traces, layout)


def stacked_area_figure(title: str, y_title: str, series: Mapping[str, Sequence[Point]]) -> dict[str, Any]:
    traces = [
        trace(
            "scatter",
            x=[t for t, _ in points],
            y=[v for _, v in points],
            name=name,
            mode="lines",
            stackgroup="one",
            line={"width": 1},
        )
        for name, points in series.items()
    ]
    return figure(
        traces, {**LAYOUT, "title": {"text": title, "font": {"size": 14}}, "yaxis": {**LAYOUT["yaxis"], "title": y_title}}
    )


def stacked_bar_figure(
    title: str, y_title: str, categories: Sequence[str], stacks: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """One bar per category, one colour per stack (e.g. used within guarantee, borrowed, idle guarantee)."""
    traces = [trace("bar", x=list(categories), y=list(values), name=name) for name, values in stacks.items()]
    layout = {**LAYOUT, "barmode": "stack", "xaxis": {"type": "category"}}
    return figure(
        traces, {**layout, "title": {"text": title, "font": {"size": 14}}, "yaxis": {**LAYOUT["yaxis"], "title": y_title}}
    )


def grouped_bar_figure(
    title: str, y_title: str, categories: Sequence[str], groups: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """Bars side by side per category, one colour per group (e.g. now versus a scenario)."""
    traces = [trace("bar", x=list(categories), y=list(values), name=name) for name, values in groups.items()]
    layout = {**LAYOUT, "barmode": "group", "xaxis": {"type": "category"}}
    return figure(
        traces, {**layout, "title": {"text": title, "font": {"size": 14}}, "yaxis": {**LAYOUT["yaxis"], "title": y_title}}
    )
