"""Benchmark: the burst proposal for 10,000 waiting jobs and 20 instance types (target <= 200 ms).

Pure computation (bursting.planner), no database: a seeded mix of jobs (GPU models, gangs,
walltimes, five teams, one of them denied by its budget) and 20 instance types over five GPU
models, planned `--repeat` times; prints the median and the worst run.

    .venv/bin/python bench/burst_proposal.py [--jobs 10000] [--types 20] [--repeat 7] [--max-nodes 64] [--one-model]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bursting.planner import InstanceOffer, PlanPolicy, WaitingJob, plan

MODELS = ("a100", "h100", "a10g", "v100", "l4")
SHAPES = ((1, 1), (1, 1), (2, 1), (4, 1), (8, 1), (8, 2), (4, 4))


def jobs(count: int, rng: random.Random, models: tuple[str, ...]) -> list[WaitingJob]:
    out = []
    for i in range(count):
        gpus, nodes = rng.choice(SHAPES)
        out.append(WaitingJob(i, f"team-{i % 5}", frozenset({rng.choice(models)}), gpus, nodes, rng.randint(600, 12 * 3600), i))
    return out


def offers(count: int, rng: random.Random, models: tuple[str, ...]) -> list[InstanceOffer]:
    sizes = (1, 2, 4, 8)
    return [
        InstanceOffer(
            f"type-{i:02d}",
            models[i % len(models)],
            sizes[(i // len(models)) % len(sizes)],
            Decimal(rng.randint(100, 4000)) / 100,
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--types", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--max-nodes", type=int, default=64)
    parser.add_argument("--one-model", action="store_true", help="every job and type on one GPU model (the worst case)")
    args = parser.parse_args()
    rng = random.Random(7)
    models = MODELS[:1] if args.one_model else MODELS
    demand, catalogue = jobs(args.jobs, rng, models), offers(args.types, rng, models)
    policy = PlanPolicy(min_nodes=0, max_nodes=args.max_nodes, max_duration_s=8 * 3600)
    denied = {"team-4": "budget forbids bursts"}
    timings = []
    result = None
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = plan(demand, catalogue, policy, denied)
        timings.append((time.perf_counter() - start) * 1000)
    assert result is not None
    print(f"jobs={args.jobs} types={args.types} max_nodes={args.max_nodes} models={len(models)} repeat={args.repeat}")
    print(
        f"chosen {result.instance_type} x{result.nodes}: {result.gpus_started} GPUs, {len(result.job_ids)} jobs, cost {result.cost}"
    )
    print(f"median {statistics.median(timings):.1f} ms, worst {max(timings):.1f} ms (target <= 200 ms)")


if __name__ == "__main__":
    main()
