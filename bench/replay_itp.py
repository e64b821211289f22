"""Replay the ITP trace (tests/fixtures/traces/itp-dev.csv) at 96 nodes x 8 GPUs, fair vs strict FIFO.

Run by hand: `.venv/bin/python bench/replay_itp.py [--nodes 96] [--json]`. Prints the summary table,
each policy's replay wall time, and checks the targets (fair mean wait <= 0.25 x FIFO's, fair max
wait <= FIFO's, no limit violations, every job completed), saying which are missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.policy.replay import format_report, run_from_options  # noqa: E402

TRACE = ROOT / "tests" / "fixtures" / "traces" / "itp-dev.csv"


def targets(report: dict[str, dict[str, float]]) -> list[tuple[str, bool, str]]:
    fair, fifo = report["fair"], report["fifo"]
    ratio = fair["mean_wait_s"] / fifo["mean_wait_s"] if fifo["mean_wait_s"] else 0.0
    return [
        ("fair mean wait <= 0.25 x fifo", ratio <= 0.25, f"{ratio:.3f} x"),
        ("fair max wait <= fifo", fair["max_wait_s"] <= fifo["max_wait_s"], f"{fair['max_wait_s']} vs {fifo['max_wait_s']} s"),
        ("no limit violations", fair["limit_violations"] == fifo["limit_violations"] == 0, f"{fair['limit_violations']}"),
        ("every job completed", fair["completed"] == fair["jobs"], f"{fair['completed']}/{fair['jobs']}"),
        ("fair replay <= 20 s", fair["wall_s"] <= 20, f"{fair['wall_s']} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=96)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    options = {
        "trace": str(TRACE), "nodes": args.nodes, "gpus_per_node": 8, "policy": "fair", "baseline": "fifo",
        "quotas": None, "checkpoint_interval": 1800.0, "half_life": 7 * 24 * 3600.0,
    }  # fmt: skip
    started = time.perf_counter()
    report = run_from_options(options)
    total = time.perf_counter() - started
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        format_report(report, print)
    print(f"replay wall time, both policies with trace loading: {total:.2f} s")
    for name, met, figure in targets(report):
        print(f"{'met   ' if met else 'MISSED'} {name}: {figure}")


if __name__ == "__main__":
    main()
