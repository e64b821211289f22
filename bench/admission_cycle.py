"""One admission cycle at scale: 10,000 pending jobs, 2,000 nodes x 8 GPUs, 100 teams.

Run by hand: `.venv/bin/python bench/admission_cycle.py [--pending N] [--nodes N] [--teams N] [--repeat N]`.
Prints the median and p95 of the cycle's wall time over repeated runs of the same snapshot. The
snapshot is synthetic but busy: about 90% of GPUs held, most teams borrowing, some needing their
guarantee back, every class, gangs up to 8 nodes, and a few held jobs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(scenario: Scenario, repeat: int, config: PolicyConfig) -> tuple[float, float, float, int, int]:
    """(median wall ms, p95 wall ms, median CPU ms, admitted, preempted) over `repeat` cycles of one snapshot."""
    runs = [scenario.cycle_seconds(config) for _ in range(repeat + 1)][1:]  # the first warms caches
    wall = [r[0] * 1000 for r in runs]
    cpu = [r[1] * 1000 for r in runs]
    return statistics.median(wall), _p95(wall), statistics.median(cpu), runs[0][2], runs[0][3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=2_000)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-explain", action="store_true", help="skip explanations (the replay's fast path)")
    args = parser.parse_args()
    scenario = Scenario(args.pending, args.nodes, args.teams)
    config = PolicyConfig(explain=not args.no_explain)
    median, p95, cpu, admitted, preempted = measure(scenario, args.repeat, config)
    print(
        f"pending={args.pending} nodes={args.nodes}x8 teams={args.teams} running={len(scenario.running)} "
        f"explain={config.explain} repeat={args.repeat}"
    )
    print(f"admitted={admitted} preempted={preempted} median={median:.1f} ms p95={p95:.1f} ms (median CPU {cpu:.1f} ms)")


if __name__ == "__main__":
    main()
