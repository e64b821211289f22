"""Replay every shared ITP window at 96 nodes x 8 GPUs, fair vs strict FIFO, and print one table.

Run by hand: `.venv/bin/python bench/replay_itp.py [--nodes 96] [--trace PATH ...] [--set FIELD=VALUE ...] [--json]`.
By default it replays every CSV in ../shared/traces/ (the four ITP windows; see their README for
provenance), or the development window in tests/fixtures/traces/ where that folder is missing. Per
window: fair/FIFO mean and max wait ratios, the worst team's slowdown against its slowdown under
FIFO, Jain's index over team slowdowns under each policy, and the fair replay's wall time. Then
the targets of issue 14 per window (fair mean wait <= 0.25 x FIFO's, fair max wait <= FIFO's, every
team's slowdown <= its FIFO slowdown, Jain's index >= FIFO's, no limit violations, every job
completed, fair replay <= 20 s), saying which are missed. `--set starvation_age_s=43200` replays
with a PolicyConfig field changed (for experiments). `--json` prints every window's figures as one
JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.policy.model import PolicyConfig  # noqa: E402
from jobs.policy.replay import run_from_options  # noqa: E402

SHARED = ROOT.parent / "shared" / "traces"
FALLBACK = ROOT / "tests" / "fixtures" / "traces" / "itp-dev.csv"


def windows() -> list[Path]:
    found = sorted(SHARED.glob("*.csv")) if SHARED.is_dir() else []
    return found or [FALLBACK]


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The comparison figures of one window's fair and FIFO replays."""
    fair, fifo = report["fair"], report["fifo"]
    teams = {
        team: (row["slowdown"], fifo["per_team"][team]["slowdown"])
        for team, row in fair["per_team"].items()
        if team in fifo["per_team"]
    }
    ratios = {team: fair_s / fifo_s if fifo_s else 1.0 for team, (fair_s, fifo_s) in teams.items()}
    worst = max(ratios, key=lambda t: ratios[t]) if ratios else ""
    return {
        "mean_wait_ratio": round(fair["mean_wait_s"] / fifo["mean_wait_s"], 3) if fifo["mean_wait_s"] else 0.0,
        "max_wait_ratio": round(fair["max_wait_s"] / fifo["max_wait_s"], 3) if fifo["max_wait_s"] else 0.0,
        "fair_mean_wait_s": fair["mean_wait_s"],
        "fifo_mean_wait_s": fifo["mean_wait_s"],
        "fair_max_wait_s": fair["max_wait_s"],
        "fifo_max_wait_s": fifo["max_wait_s"],
        "worst_team": worst,
        "worst_team_slowdown": teams[worst][0] if worst else 0.0,
        "worst_team_fifo_slowdown": teams[worst][1] if worst else 0.0,
        "worst_team_ratio": round(ratios[worst], 3) if worst else 0.0,
        "teams_slower_than_fifo": sorted(t for t, r in ratios.items() if teams[t][0] > teams[t][1]),
        "jain_fair": fair["fairness"]["jain_slowdown"],
        "jain_fifo": fifo["fairness"]["jain_slowdown"],
        "completed": f"{fair['completed']}/{fair['jobs']}",
        "limit_violations": fair["limit_violations"] + fifo["limit_violations"],
        "preemptions": fair["preemptions"],
        "fair_wall_s": fair["wall_s"],
        "fair_cpu_s": fair["cpu_s"],
    }


def targets(row: dict[str, Any]) -> list[tuple[str, bool, str]]:
    done, jobs = row["completed"].split("/")
    return [
        ("fair mean wait <= 0.25 x fifo", row["mean_wait_ratio"] <= 0.25, f"{row['mean_wait_ratio']:.3f} x"),
        ("fair max wait <= fifo", row["fair_max_wait_s"] <= row["fifo_max_wait_s"], f"{row['max_wait_ratio']:.3f} x"),
        ("every team's slowdown <= fifo's", not row["teams_slower_than_fifo"], ", ".join(row["teams_slower_than_fifo"]) or "all"),
        ("jain >= fifo", row["jain_fair"] >= row["jain_fifo"], f"{row['jain_fair']} vs {row['jain_fifo']}"),
        ("no limit violations", row["limit_violations"] == 0, str(row["limit_violations"])),
        ("every job completed", done == jobs, row["completed"]),
        ("fair replay <= 20 s", row["fair_wall_s"] <= 20, f"{row['fair_wall_s']} s"),
    ]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=96)
    parser.add_argument("--trace", action="append", default=None, help="a trace CSV (repeatable); default: every shared window")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a PolicyConfig field for the fair policy"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.nodes < 1:
        parser.error(f"--nodes must be at least 1, got {args.nodes}")
    overrides: dict[str, Any] = {}
    fields = set(PolicyConfig.__dataclass_fields__) - {"explain", "half_life_s", "classes"}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields or not value:
            parser.error(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
        overrides[name] = _value(value)
    traces = [Path(t) for t in args.trace] if args.trace else windows()
    rows: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for trace in traces:
        options = {
            "trace": str(trace), "nodes": args.nodes, "gpus_per_node": 8, "policy": "fair", "baseline": "fifo",
            "quotas": None, "checkpoint_interval": 1800.0, "half_life": 7 * 24 * 3600.0, "policy_config": overrides,
        }  # fmt: skip
        rows[trace.stem] = summary(run_from_options(options))
    total = time.perf_counter() - started
    head = f"{'window':<18}{'mean f/F':>9}{'max f/F':>9}{'worst team slowdown f/F':>34}{'jain f':>8}{'jain F':>8}{'fair s':>8}"
    print(f"{args.nodes} nodes x 8 GPUs, fair vs FIFO" + (f", fair with {overrides}" if overrides else ""))
    print(head)
    for name, row in rows.items():
        worst = f"{row['worst_team']} {row['worst_team_slowdown']}/{row['worst_team_fifo_slowdown']}"
        print(
            f"{name:<18}{row['mean_wait_ratio']:>9.3f}{row['max_wait_ratio']:>9.3f}{worst:>34}"
            f"{row['jain_fair']:>8.4f}{row['jain_fifo']:>8.4f}{row['fair_wall_s']:>8.2f}"
        )
    print(f"replay wall time, all windows and both policies with trace loading: {total:.1f} s")
    missed = 0
    for name, row in rows.items():
        for target, met, figure in targets(row):
            missed += not met
            if not met:
                print(f"MISSED {name}: {target}: {figure}")
    print(f"{sum(len(targets(r)) for r in rows.values()) - missed} of {sum(len(targets(r)) for r in rows.values())} targets met")
    if args.json:
        print(json.dumps({"nodes": args.nodes, "policy_config": overrides, "windows": rows}))


if __name__ == "__main__":
    main()
