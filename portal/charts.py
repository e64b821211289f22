"""Chart figures built as plain dicts (Plotly graph objects), embedded with json_script.

Pure functions: data in, figure dict out. The browser only draws them and extends their traces
with the points the websocket sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

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


def line_figure(
    title: str,
    y_title: str,
    series: Mapping[str, Sequence[Point]],
    y_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One line per series, in the order given; trace names are the series keys."""
    figure = go.Figure()
    for name, points in series.items():
        figure.add_trace(
            go.Scatter(x=[t for t, _ in points], y=[v for _, v in points], name=name, mode="lines", line={"width": 1.5})
        )
    layout = {**LAYOUT, "title": {"text": title, "font": {"size": 14}}, "yaxis": {**LAYOUT["yaxis"], "title": y_title}}
    if y_range is not None:
        layout["yaxis"] = {**layout["yaxis"], "range": list(y_range), "rangemode": "normal"}
    figure.update_layout(layout)
    plotted: dict[str, Any] = figure.to_plotly_json()
    return plotted


def stacked_area_figure(title: str, y_title: str, series: Mapping[str, Sequence[Point]]) -> dict[str, Any]:
    figure = go.Figure()
    for name, points in series.items():
        figure.add_trace(
            go.Scatter(
                x=[t for t, _ in points], y=[v for _, v in points], name=name, mode="lines", stackgroup="one", line={"width": 1}
            )
        )
    figure.update_layout(
        {**LAYOUT, "title": {"text": title, "font": {"size": 14}}, "yaxis": {**LAYOUT["yaxis"], "title": y_title}}
    )
    plotted: dict[str, Any] = figure.to_plotly_json()
    return plotted


def stacked_bar_figure(
    title: str, y_title: str, categories: Sequence[str], stacks: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """One bar per category, one colour per stack (e.g. used within guarantee, borrowed, idle guarantee)."""
    figure = go.Figure()
    for name, values in stacks.items():
        figure.add_trace(go.Bar(x=list(categories), y=list(values), name=name))
    layout = {**LAYOUT, "barmode": "stack", "xaxis": {"type": "category"}}
    figure.update_layout(
        {**layout, "title": {"text": title, "font": {"size": 14}}, "yaxis": {**LAYOUT["yaxis"], "title": y_title}}
    )
    plotted: dict[str, Any] = figure.to_plotly_json()
    return plotted


def grouped_bar_figure(
    title: str, y_title: str, categories: Sequence[str], groups: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """Bars side by side per category, one colour per group (e.g. now versus a scenario)."""
    figure = go.Figure()
    for name, values in groups.items():
        figure.add_trace(go.Bar(x=list(categories), y=list(values), name=name))
    layout = {**LAYOUT, "barmode": "group", "xaxis": {"type": "category"}}
    figure.update_layout(
        {**layout, "title": {"text": title, "font": {"size": 14}}, "yaxis": {**LAYOUT["yaxis"], "title": y_title}}
    )
    plotted: dict[str, Any] = figure.to_plotly_json()
    return plotted
