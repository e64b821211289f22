"""--output json|yaml|table: the same data three ways. JSON and YAML are the API's fields unchanged;
tables pick columns for people."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml

FORMATS = ("table", "json", "yaml")

# Why a waiting job waits: the portal's reason codes (jobs.states.PendingReason) in words.
REASONS = {
    "new": "not yet considered",
    "quota": "team GPU limit reached",
    "capacity": "not enough free GPUs",
    "fragmentation": "free GPUs are spread over too many nodes",
    "queue": "behind earlier jobs of the team",
    "priority": "higher-priority jobs go first",
    "budget": "held: team budget",
    "no_nodes": "no healthy node has this GPU model",
    "burst_teams": "the free nodes are another team's burst",
    "gang": "not enough nodes free at once for the whole gang",
}


def dump(data: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    elif fmt == "yaml":
        out.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    else:
        raise ValueError(fmt)


def text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "-"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, Callable[[dict[str, Any]], Any]]], out: TextIO) -> None:
    cells = [[title for title, _ in columns]] + [[text(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n")


def pairs(items: Sequence[tuple[str, Any]], out: TextIO) -> None:
    width = max(len(key) for key, _ in items)
    for key, value in items:
        out.write(f"{key + ':':<{width + 1}} {text(value)}\n")


def why_waiting(job: dict[str, Any]) -> str:
    """A waiting job's reason in words, with the portal's detail; '-' for a job that does not wait."""
    reason = job.get("reason") or ""
    if not reason:
        return "-"
    words = REASONS.get(reason, reason)
    detail = job.get("reason_detail") or ""
    return f"{words} ({detail})" if detail and detail != words else words


def position(job: dict[str, Any]) -> str:
    team, pool = job.get("team_position"), job.get("pool_position")
    parts = [f"#{team} in team" if team else "", f"#{pool} in pool" if pool else ""]
    return ", ".join(p for p in parts if p) or "-"


JOB_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("ID", lambda j: j.get("id")),
    ("NAME", lambda j: j.get("name")),
    ("TEAM", lambda j: j.get("team")),
    ("STATE", lambda j: j.get("state")),
    ("GPUS", lambda j: f"{j.get('gpus')}x{j.get('gpu_model')}"),
    ("EXIT", lambda j: j.get("exit_code")),
    ("WHY PENDING", why_waiting),
    ("POSITION", position),
    ("ESTIMATED START", lambda j: j.get("estimated_start")),
]


def job_details(job: dict[str, Any]) -> list[tuple[str, Any]]:
    array = f"{job.get('array_id')} [{job.get('array_index')}]" if job.get("array_id") else None
    return [
        ("id", job.get("id")),
        ("name", job.get("name")),
        ("team", job.get("team")),
        ("owner", job.get("owner")),
        ("template", job.get("template")),
        ("state", job.get("state")),
        ("why pending", why_waiting(job)),
        ("position", position(job)),
        ("estimated start", job.get("estimated_start")),
        ("gpus", f"{job.get('gpus')} x {job.get('gpu_model')} ({job.get('nodes')} node(s) x {job.get('gpus_per_node')})"),
        ("priority", job.get("priority")),
        ("walltime", f"{job.get('walltime_s')} s"),
        ("array", array),
        ("pool", job.get("pool")),
        ("placement", job.get("placement")),
        ("submitted", job.get("submitted_at")),
        ("started", job.get("started_at")),
        ("finished", job.get("finished_at")),
        ("exit code", job.get("exit_code")),
        ("backend", f"{job.get('backend')} {job.get('backend_job_id')}" if job.get("backend") else None),
    ]
