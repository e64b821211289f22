"""The console's node map as a Plotly figure dict: pure, data in, figure out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from portal.charts import figure, trace

STATE_LEVEL = {"ready": 0, "cordoned": 1, "draining": 2, "down": 3}
STATE_COLOURS = [[0.0, "#16a34a"], [0.33, "#16a34a"], [0.34, "#eab308"], [0.5, "#eab308"], [0.51, "#f97316"], [0.66, "#f97316"], [0.67, "#dc2626"], [1.0, "#dc2626"]]  # fmt: skip


@dataclass(frozen=True)
class NodeCell:
    pool: str
    name: str
    state: str
    gpus: int
    gpus_used: int
    jobs: int


def node_map_figure(cells: Sequence[NodeCell]) -> dict[str, Any]:
    """One row per pool, one square per node, coloured by state; hover shows GPUs and jobs."""
    pools = sorted({c.pool for c in cells})
    width = max((sum(1 for c in cells if c.pool == p) for p in pools), default=1)
    z: list[list[float | None]] = [[None] * width for _ in pools]
    text: list[list[str]] = [[""] * width for _ in pools]
    for row, pool in enumerate(pools):
        for col, cell in enumerate(c for c in cells if c.pool == pool):
            z[row][col] = STATE_LEVEL.get(cell.state, 3)
            text[row][col] = f"{cell.name}<br>{cell.state}<br>{cell.gpus_used}/{cell.gpus} GPUs used<br>{cell.jobs} jobs"
    heatmap = trace(
        "heatmap",
        z=z,
        y=pools,
        text=text,
        hoverinfo="text",
        zmin=0,
        zmax=3,
        colorscale=STATE_COLOURS,
        showscale=False,
        xgap=3,
        ygap=3,
    )
    layout = {
        "title": {"text": "Nodes by pool: green ready, yellow cordoned, orange draining, red down", "font": {"size": 14}},
        "height": max(160, 60 + 40 * len(pools)),
        "margin": {"l": 110, "r": 12, "t": 36, "b": 24},
        "xaxis": {"visible": False},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
    }
    return figure([heatmap], layout)
