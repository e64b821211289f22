"""One admission cycle at scale: 10,000 pending jobs, 2,000 nodes x 8 GPUs, 100 teams.

Run by hand: `.venv/bin/python bench/admission_cycle.py [--pending N] [--nodes N] [--teams N] [--repeat N] [--json]`.
Prints the median and p95 of the cycle's wall time over repeated runs of the same snapshot, and the
same figures for a bare reference loop (bench/admission_reference.py: sort by usage, bucketed best
fit, whole nodes for gangs; no classes, reservations, reclaim or explanations) run on the same
snapshot in the same process, one reference run before each portal run so that the machine's drift
hits both. `--json` prints one JSON object as the last line. The snapshot is synthetic but busy:
about 90% of GPUs held, most teams borrowing, some needing their guarantee back, every class, gangs
up to 8 nodes, and a few held jobs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.admission_reference import reference_cycle
from jobs.policy import Cluster, NodeState, PendingJob, PolicyConfig, Quota, RunningJob, run_cycle

POOLS = (("a100-east", "a100", 0.35), ("a100-west", "a100", 0.35), ("h100-main", "h100", 0.30))
CLASSES = (("critical", 0.05), ("standard", 0.80), ("preemptible", 0.15))
SHAPES = ((1, 1, 0.55), (2, 1, 0.15), (4, 1, 0.10), (8, 1, 0.12), (8, 2, 0.05), (8, 4, 0.02), (8, 8, 0.01))


class Scenario:
    """A frozen snapshot of a busy grid, built from a seed."""

    def __init__(self, pending: int, nodes: int, teams: int, seed: int = 7, now: float = 1_000_000.0) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.team_names = [f"team{i:03d}" for i in range(teams)]
        node_states, self.running = self._fill(nodes)
        self.cluster = Cluster(node_states)
        self.quotas = self._quotas(node_states)
        self.pending = [self._pending_job(i) for i in range(pending)]
        self.usage = {t: self.rng.uniform(0, 5e6) for t in self.team_names}

    def _team(self) -> str:
        # Skewed like a real grid: a few large teams hold most of the work.
        return self.team_names[min(int(self.rng.paretovariate(1.2)) - 1, len(self.team_names) - 1)]

    def _fill(self, count: int) -> tuple[list[NodeState], list[RunningJob]]:
        nodes: list[NodeState] = []
        running: list[RunningJob] = []
        for i in range(count):
            pool, model = self._pool_for(i / count)
            free = 8
            while free and self.rng.random() < 0.9:
                gpus = min(free, self.rng.choice((1, 2, 4, 8)))
                running.append(self._running(len(running), model, {f"n{i:05d}": gpus}))
                free -= gpus
            nodes.append(NodeState(f"n{i:05d}", pool, model, 8, free, healthy=self.rng.random() > 0.01))
        return nodes, running

    @staticmethod
    def _pool_for(fraction: float) -> tuple[str, str]:
        edge = 0.0
        for pool, model, share in POOLS:
            edge += share
            if fraction < edge:
                return pool, model
        return POOLS[-1][0], POOLS[-1][1]

    def _running(self, n: int, model: str, placement: dict[str, int]) -> RunningJob:
        start = self.now - self.rng.uniform(0, 4 * 3600)
        priority = self._pick(CLASSES)
        return RunningJob(
            f"r{n}", self._team(), model, placement, priority, start, self.now + self.rng.uniform(60, 86400), 1800.0
        )

    def _quotas(self, nodes: list[NodeState]) -> list[Quota]:
        quotas: list[Quota] = []
        for model in ("a100", "h100"):
            capacity = sum(n.gpus for n in nodes if n.gpu_model == model and n.healthy)
            guarantee = int(capacity * 0.7 / len(self.team_names))
            for team in self.team_names:
                weight = float(self.rng.choice((1, 1, 2, 4)))
                quotas.append(Quota(team, model, guarantee, capacity // 2, weight, lendable=self.rng.random() > 0.02))
        return quotas

    def _pending_job(self, n: int) -> PendingJob:
        gpus_per_node, nodes = self._pick_shape()
        return PendingJob(
            n,
            self._team(),
            self.rng.choice(("a100", "a100", "h100")),
            gpus_per_node,
            nodes,
            self._pick(CLASSES),
            self.now - self.rng.uniform(0, 3 * 86400),
            self.rng.uniform(300, 2 * 86400),
            held=self.rng.random() < 0.02,
        )

    def _pick(self, options: tuple[tuple[str, float], ...]) -> str:
        return self.rng.choices([o[0] for o in options], [o[1] for o in options])[0]

    def _pick_shape(self) -> tuple[int, int]:
        shape = self.rng.choices(SHAPES, [s[2] for s in SHAPES])[0]
        return shape[0], shape[1]

    def cycle_seconds(self, config: PolicyConfig) -> tuple[float, float, int, int]:
        """(wall s, CPU s, admitted, preempted) of one cycle."""
        started, cpu_started = time.perf_counter(), time.process_time()
        result = run_cycle(
            now=self.now,
            cluster=self.cluster,
            quotas=self.quotas,
            pending=self.pending,
            running=self.running,
            usage=self.usage,
            config=config,
        )
        return time.perf_counter() - started, time.process_time() - cpu_started, len(result.admitted), len(result.preempted)

    def reference_seconds(self) -> tuple[float, float, int]:
        """(wall s, CPU s, started) of one run of the bare reference loop on the same snapshot."""
        started, cpu_started = time.perf_counter(), time.process_time()
        admitted = reference_cycle(self.cluster.nodes, self.quotas, self.pending, self.running, self.usage)
        return time.perf_counter() - started, time.process_time() - cpu_started, len(admitted)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(scenario: Scenario, repeat: int, config: PolicyConfig) -> tuple[float, float, float, int, int]:
    """(median wall ms, p95 wall ms, median CPU ms, admitted, preempted) over `repeat` cycles of one snapshot."""
    runs = [scenario.cycle_seconds(config) for _ in range(repeat + 1)][1:]  # the first warms caches
    wall = [r[0] * 1000 for r in runs]
    cpu = [r[1] * 1000 for r in runs]
    return statistics.median(wall), _p95(wall), statistics.median(cpu), runs[0][2], runs[0][3]


def measure_against_reference(scenario: Scenario, repeat: int, config: PolicyConfig) -> dict[str, float | int]:
    """The portal's cycle and the reference loop, alternated run by run (one warm-up run of each)."""
    portal: list[tuple[float, float, int, int]] = []
    reference: list[tuple[float, float, int]] = []
    for _ in range(repeat + 1):
        reference.append(scenario.reference_seconds())
        portal.append(scenario.cycle_seconds(config))
    portal, reference = portal[1:], reference[1:]
    wall = [r[0] * 1000 for r in portal]
    ref = [r[0] * 1000 for r in reference]
    median, ref_median = statistics.median(wall), statistics.median(ref)
    return {
        "median_ms": round(median, 2),
        "p95_ms": round(_p95(wall), 2),
        "cpu_median_ms": round(statistics.median(r[1] * 1000 for r in portal), 2),
        "reference_ms": round(ref_median, 2),
        "reference_p95_ms": round(_p95(ref), 2),
        "ratio": round(median / ref_median, 2),
        "admitted": portal[0][2],
        "preempted": portal[0][3],
        "reference_cpu_median_ms": round(statistics.median(r[1] * 1000 for r in reference), 2),
        "reference_admitted": reference[0][2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=2_000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-explain", action="store_true", help="skip explanations (the replay's fast path)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object, last line")
    args = parser.parse_args()
    for name in ("pending", "nodes", "teams", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    scenario = Scenario(args.pending, args.nodes, args.teams)
    config = PolicyConfig(explain=not args.no_explain)
    figures = measure_against_reference(scenario, args.repeat, config)
    print(
        f"pending={args.pending} nodes={args.nodes}x8 teams={args.teams} running={len(scenario.running)} "
        f"explain={config.explain} repeat={args.repeat}"
    )
    print(
        f"admitted={figures['admitted']} preempted={figures['preempted']} median={figures['median_ms']:.1f} ms "
        f"p95={figures['p95_ms']:.1f} ms (median CPU {figures['cpu_median_ms']:.1f} ms)"
    )
    print(
        f"reference loop: started={figures['reference_admitted']} median={figures['reference_ms']:.1f} ms "
        f"p95={figures['reference_p95_ms']:.1f} ms; ratio {figures['ratio']:.2f}"
    )
    if args.json:
        meta = {"pending": args.pending, "nodes": args.nodes, "gpus_per_node": 8, "teams": args.teams}
        meta |= {"running": len(scenario.running), "explain": config.explain, "repeat": args.repeat}
        print(json.dumps(meta | figures))


if __name__ == "__main__":
    main()
