"""Billing chart figures as plain dicts in Plotly's JSON form (portal.charts), embedded with json_script.

Pure functions: data in, figure dict out; the browser only draws them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from portal.charts import figure, trace

LAYOUT: dict[str, Any] = {
    "margin": {"l": 56, "r": 12, "t": 36, "b": 40},
    "height": 280,
    "legend": {"orientation": "h", "y": -0.2},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "xaxis": {"gridcolor": "#e5e7eb"},
    "yaxis": {"gridcolor": "#e5e7eb", "rangemode": "tozero"},
}
KIND_LABELS = {"onprem": "On-premises", "cloud": "Cloud burst"}


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {**LAYOUT, "title": {"text": title, "font": {"size": 14}}, **extra}


def monthly_trend_figure(
    title: str, currency: str, series: Mapping[str, Mapping[date, Decimal]], months: Sequence[date]
) -> dict[str, Any]:
    """Stacked bars: one bar per month, one segment per series (team or GPU model); missing months are 0."""
    labels = [f"{m:%Y-%m}" for m in months]
    traces = [trace("bar", x=labels, y=[float(values.get(m, 0)) for m in months], name=name) for name, values in series.items()]
    return figure(
        traces,
        _layout(
            title, barmode="stack", yaxis={**LAYOUT["yaxis"], "title": currency}, xaxis={**LAYOUT["xaxis"], "type": "category"}
        ),
    )


def cost_bar_figure(title: str, currency: str, costs: Mapping[str, Decimal], *, horizontal: bool = False) -> dict[str, Any]:
    """One bar per category, in the order given (largest first for top spenders)."""
    names, values = list(costs), [float(v) for v in costs.values()]
    bar = trace("bar", y=names[::-1], x=values[::-1], orientation="h") if horizontal else trace("bar", x=names, y=values)
    axis = {"title": currency, "gridcolor": "#e5e7eb", "rangemode": "tozero"}
    layout = (
        _layout(title, showlegend=False, xaxis=axis, yaxis={"type": "category"})
        if horizontal
        else _layout(title, showlegend=False, yaxis=axis, xaxis={"type": "category"})
    )
    return figure([bar], layout)


def pool_kind_figure(title: str, costs: Mapping[str, Decimal]) -> dict[str, Any]:
    """On-premises versus cloud burst as a donut."""
    pie = trace(
        "pie", labels=[KIND_LABELS.get(k, k) for k in costs], values=[float(v) for v in costs.values()], hole=0.55, sort=False
    )
    return figure([pie], _layout(title))


def budget_figure(
    title: str, currency: str, amount: Decimal, spent: Decimal, projected: Decimal, thresholds: Sequence[Decimal]
) -> dict[str, Any]:
    """Spent and projected against the budget, with a marker at each threshold."""
    traces = [
        trace("bar", y=["spend"], x=[float(spent)], orientation="h", name="spent"),
        trace(
            "bar",
            y=["spend"],
            x=[float(max(projected - spent, Decimal(0)))],
            orientation="h",
            name="projected by period end",
            opacity=0.4,
        ),
    ]
    shapes, annotations = [], []
    for percent in thresholds:  # a dotted vertical line at each threshold, labelled at its top
        x = float(amount * percent / 100)
        line = {"dash": "dot", "color": "#b45309"}
        shapes.append({"type": "line", "xref": "x", "yref": "y domain", "x0": x, "x1": x, "y0": 0, "y1": 1, "line": line})
        annotations.append(
            {
                "xref": "x",
                "yref": "y domain",
                "x": x,
                "y": 1,
                "text": f"{percent.normalize():f} %",
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
            }
        )
    layout = _layout(
        title,
        barmode="stack",
        height=180,
        xaxis={**LAYOUT["xaxis"], "title": currency, "rangemode": "tozero"},
        yaxis={"visible": False},
        shapes=shapes,
        annotations=annotations,
    )
    return figure(traces, layout)
