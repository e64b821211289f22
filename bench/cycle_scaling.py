"""How one admission cycle scales: wall time against pending jobs and nodes (100 teams).

Run by hand: `.venv/bin/python bench/cycle_scaling.py [--repeat 7]`. Uses the busy synthetic snapshot
of bench/admission_cycle.py; prints the median CPU milliseconds per cycle (steadier than wall time on a
shared machine), with explanations and without.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.admission_cycle import Scenario, measure
from jobs.policy import PolicyConfig

PENDING = (1_000, 5_000, 10_000, 20_000)
NODES = (500, 2_000, 4_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("median CPU ms per cycle (explained / without explanations), 100 teams, 8 GPUs per node")
    print(f"{'pending':>8} | " + " | ".join(f"{n:>5} nodes    " for n in NODES))
    for pending in PENDING:
        cells = []
        for nodes in NODES:
            scenario = Scenario(pending, nodes, 100)
            explained = measure(scenario, args.repeat, PolicyConfig())[2]
            bare = measure(scenario, args.repeat, PolicyConfig(explain=False))[2]
            cells.append(f"{explained:6.1f} / {bare:6.1f}")
        print(f"{pending:>8} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
