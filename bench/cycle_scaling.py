"""How one admission cycle scales: CPU time against pending jobs and nodes (100 teams).

Run by hand: `.venv/bin/python bench/cycle_scaling.py [--repeat 7] [--json]`. Uses the busy synthetic
snapshot of bench/admission_cycle.py; prints the median CPU milliseconds per cycle (steadier than wall
time on a shared machine) with explanations, without them, and for the bare reference loop
(bench/admission_reference.py) on the same snapshot, the three alternated run by run. `--json`
prints every cell as one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.admission_cycle import Scenario
from jobs.policy import PolicyConfig

PENDING = (1_000, 5_000, 10_000, 20_000)
NODES = (500, 1_000, 2_000, 4_000)


def cell(pending: int, nodes: int, repeat: int) -> dict[str, float | int]:
    """Median CPU ms of the explained cycle, the bare cycle and the reference loop on one snapshot."""
    scenario = Scenario(pending, nodes, 100)
    explained, bare, reference = [], [], []
    for _ in range(repeat + 1):  # the first round warms caches
        reference.append(scenario.reference_seconds()[1] * 1000)
        explained.append(scenario.cycle_seconds(PolicyConfig())[1] * 1000)
        bare.append(scenario.cycle_seconds(PolicyConfig(explain=False))[1] * 1000)
    return {
        "pending": pending,
        "nodes": nodes,
        "running": len(scenario.running),
        "explained_ms": round(statistics.median(explained[1:]), 2),
        "bare_ms": round(statistics.median(bare[1:]), 2),
        "reference_ms": round(statistics.median(reference[1:]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print every cell as one JSON object, last line")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    print("median CPU ms per cycle: explained / without explanations / bare reference loop; 100 teams, 8 GPUs per node")
    print(f"{'pending':>8} | " + " | ".join(f"{n:>5} nodes{'':>15}" for n in NODES))
    cells = []
    for pending in PENDING:
        row = [cell(pending, nodes, args.repeat) for nodes in NODES]
        cells += row
        print(
            f"{pending:>8} | "
            + " | ".join(f"{c['explained_ms']:6.1f} / {c['bare_ms']:6.1f} / {c['reference_ms']:5.1f}" for c in row)
        )
    if args.json:
        print(json.dumps({"repeat": args.repeat, "teams": 100, "gpus_per_node": 8, "cells": cells}))


if __name__ == "__main__":
    main()
