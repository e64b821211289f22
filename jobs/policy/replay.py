"""Discrete-event replay of a job trace through the admission policy, for benchmarks and what-ifs.

The replay drives the very `run_cycle` (or `fifo_cycle`) the portal runs: after every instant at
which jobs arrive or finish, one admission cycle runs on the simulated grid and its decisions are
applied. Jobs run for their traced duration, which is also their walltime (the estimate the policy
backfills with). A preempted job loses the work since its last checkpoint (one every
`checkpoint_interval_s` of run time), goes back to the queue with its original submit time, and
resumes from that checkpoint.

Shapes: a job of up to one node's GPUs runs on one node; a larger one takes whole nodes, rounded up
(20 GPUs on 8-GPU nodes take 3 nodes, and the 24 GPUs count as used).

Figures per policy (all times in seconds): `wait` is the total time a job spent pending (first wait
plus any wait after a preemption); `jct` is completion minus submission; `utilization` is GPU-seconds
held by running jobs (lost work included) over total GPUs x makespan; `limit_violations` counts every
time the simulator, checking independently of the policy, found a team above its limit, a node
given more GPUs than it had, or a job admitted that was not pending. Fairness: a team's slowdown is
its jobs' total time in system over their total run time (1 = never waited); `jain_slowdown` is
Jain's index over the teams' slowdowns (1 = all teams slowed alike, 1/n = one team takes all the
delay); `small_team_wait_ratio` is the mean wait of jobs from teams with below-median demand over the
mean wait of all jobs (below 1: small teams are not crowded out).

Run: `python -m jobs.policy.replay TRACE.csv --nodes 96 --gpus-per-node 8 --policy fair --baseline fifo`
or the same through `manage.py replay_trace`.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.policy.cycle import run_cycle
from jobs.policy.fairshare import advance_usage
from jobs.policy.fifo import fifo_cycle
from jobs.policy.model import Cluster, CycleResult, NodeState, PendingJob, PolicyConfig, Quota, Reservation, RunningJob

MODEL, POOL = "gpu", "replay"
POLICIES = ("fair", "fifo")


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One row of a trace: `job_id, submit_time_s, duration_s, num_gpus, team`."""

    id: str
    submit_time: float
    duration: float
    gpus: int
    team: str


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    """The simulated grid and policy settings of one replay."""

    nodes: int
    gpus_per_node: int
    policy: str = "fair"
    checkpoint_interval_s: float = 1800.0
    quotas: tuple[Quota, ...] | None = None
    config: PolicyConfig = field(default_factory=lambda: PolicyConfig(explain=False))


def load_trace(path: str | Path) -> list[TraceJob]:
    with open(path, newline="") as handle:
        return [
            TraceJob(row["job_id"], float(row["submit_time_s"]), float(row["duration_s"]), int(row["num_gpus"]), row["team"])
            for row in csv.DictReader(handle)
        ]


def default_quotas(teams: Sequence[str], total_gpus: int) -> tuple[Quota, ...]:
    """Equal guarantees that add up to at most the grid, and the whole grid as every team's limit."""
    share = total_gpus // max(1, len(teams))
    return tuple(Quota(team, MODEL, share, total_gpus) for team in sorted(set(teams)))


def load_quotas(path: str | Path) -> tuple[Quota, ...]:
    """JSON: {"team": {"guarantee": 64, "limit": 768, "weight": 1, "lendable": true}, ...}."""
    data = json.loads(Path(path).read_text())
    return tuple(
        Quota(team, MODEL, int(q["guarantee"]), int(q["limit"]), float(q.get("weight", 1.0)), bool(q.get("lendable", True)))
        for team, q in data.items()
    )


def shape(gpus: int, gpus_per_node: int) -> tuple[int, int]:
    """(GPUs per node, nodes): one node if it fits, else whole nodes rounded up."""
    if gpus <= gpus_per_node:
        return gpus, 1
    return gpus_per_node, math.ceil(gpus / gpus_per_node)


class _Simulation:
    """The grid, the queue and the clock of one replay."""

    def __init__(self, trace: Sequence[TraceJob], spec: ReplaySpec) -> None:
        self.spec = spec
        self.trace = {job.id: job for job in trace}
        self.total_gpus = spec.nodes * spec.gpus_per_node
        self.quotas = spec.quotas or default_quotas([j.team for j in trace], self.total_gpus)
        self.limits = {q.team: q.limit for q in self.quotas}
        self.guarantees = {q.team: q.guarantee for q in self.quotas}
        self._node_states: dict[tuple[str, int], NodeState] = {}
        self.free = {f"node{i:04d}": spec.gpus_per_node for i in range(spec.nodes)}
        self.arrivals = sorted(trace, key=lambda j: j.submit_time)
        self.pending: dict[str, PendingJob] = {}
        self.running: dict[str, RunningJob] = {}
        self.left: dict[str, float] = {j.id: j.duration for j in trace}  # work still to do
        self.ends: list[tuple[float, str, float]] = []  # (end, job, start) of running jobs
        self.pending_since: dict[str, float] = {}
        self.wait: dict[str, float] = defaultdict(float)
        # With explanations on: each job's first estimate (when it was made, the start it said) and how it came out.
        self.first_estimate: dict[str, tuple[float, float]] = {}
        self.estimated_done: set[str] = set()
        self.estimate_outcomes: list[tuple[float, float]] = []  # (estimated wait, actual wait) from the estimate
        self.done: dict[str, float] = {}
        self.held_gpus: dict[str, int] = defaultdict(int)
        self.usage: dict[str, float] = {}
        self.clock = 0.0
        self.busy_gpu_s = 0.0
        self.lost_gpu_s = 0.0
        self.preemptions = 0
        self.violations = 0
        self.team_busy: dict[str, float] = defaultdict(float)
        self.reservations: list[Reservation] = []  # the last fair cycle's, handed to the next

    # -- events ---------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> None:
        at, reported = 0, -1
        while at < len(self.arrivals) or self.ends:
            if progress is not None and at * 100 // max(1, len(self.arrivals)) > reported:
                reported = at * 100 // max(1, len(self.arrivals))
                progress(reported / 100)  # by arrivals: cheap to count, close enough for a progress bar
            now = min(
                self.arrivals[at].submit_time if at < len(self.arrivals) else math.inf, self.ends[0][0] if self.ends else math.inf
            )
            self._advance(now)
            freed, was_empty = False, not self.pending
            while self.ends and self.ends[0][0] <= now:
                freed = self._finish(*heapq.heappop(self.ends)) or freed
            arrived = []
            while at < len(self.arrivals) and self.arrivals[at].submit_time <= now:
                arrived.append(self._arrive(self.arrivals[at]))
                at += 1
            if self.pending and (freed or self._could_start(arrived, was_empty)):
                self._cycle()

    def _advance(self, now: float) -> None:
        elapsed = now - self.clock
        self.usage = advance_usage(self.usage, self.held_gpus, elapsed, self.spec.config.half_life_s)
        held = sum(self.held_gpus.values())
        self.busy_gpu_s += held * elapsed
        for team, gpus in self.held_gpus.items():
            self.team_busy[team] += gpus * elapsed
        self.clock = now

    def _arrive(self, job: TraceJob) -> PendingJob:
        gpus_per_node, nodes = shape(job.gpus, self.spec.gpus_per_node)
        pending = PendingJob(job.id, job.team, MODEL, gpus_per_node, nodes, "standard", job.submit_time, job.duration)
        self._enqueue(pending)
        return pending

    def _could_start(self, arrived: list[PendingJob], was_empty: bool) -> bool:
        """Whether a cycle after these arrivals (and no GPUs freed) could change anything; skipping saves time only.

        FIFO: only if the queue was empty (otherwise the blocked head still blocks). Fair: if GPUs
        are free, or an arrival fits in its team's guarantee and could reclaim.
        """
        if not arrived:
            return False
        if self.spec.policy == "fifo":
            return was_empty
        return any(self.free.values()) or any(self.held_gpus[j.team] + j.gpus <= self.guarantees.get(j.team, 0) for j in arrived)

    def _enqueue(self, job: PendingJob) -> None:
        self.pending[str(job.id)] = job
        self.pending_since[str(job.id)] = self.clock

    def _finish(self, end: float, job_id: str, start: float) -> bool:
        job = self.running.get(job_id)
        if job is None or job.start_time != start:
            return False  # preempted since; this end is stale
        self._release(job)
        self.done[job_id] = end
        return True

    def _release(self, job: RunningJob) -> None:
        del self.running[str(job.id)]
        for node, gpus in job.placement.items():
            self.free[node] += gpus
        self.held_gpus[job.team] -= job.gpus

    # -- decisions ------------------------------------------------------------------------

    def _cycle(self) -> None:
        nodes = [self._node_state(name, free) for name, free in self.free.items()]
        pending, running = list(self.pending.values()), list(self.running.values())
        result = self._decide(Cluster(nodes), pending, running)
        for job_id, explanation in result.waiting.items():
            if explanation.estimated_start is not None and str(job_id) not in self.first_estimate:
                self.first_estimate[str(job_id)] = (self.clock, explanation.estimated_start)
        for preemption in result.preempted:
            self._preempt(self.running[str(preemption.job_id)])
        for admission in result.admitted:
            self._start(str(admission.job_id), admission.placement)
        self._check()

    def _node_state(self, name: str, free: int) -> NodeState:
        state = self._node_states.get((name, free))
        if state is None:
            state = self._node_states[(name, free)] = NodeState(name, POOL, MODEL, self.spec.gpus_per_node, free)
        return state

    def _decide(self, cluster: Cluster, pending: list[PendingJob], running: list[RunningJob]) -> CycleResult:
        if self.spec.policy == "fifo":
            return fifo_cycle(
                now=self.clock, cluster=cluster, quotas=self.quotas, pending=pending, running=running, explain=False
            )
        result = run_cycle(
            now=self.clock,
            cluster=cluster,
            quotas=self.quotas,
            pending=pending,
            running=running,
            usage=self.usage,
            config=self.spec.config,
            previous=self.reservations,
        )
        self.reservations = result.reservations
        return result

    def _preempt(self, job: RunningJob) -> None:
        saved = job.checkpointed_at(self.clock) - job.start_time
        self.left[str(job.id)] -= saved
        self.lost_gpu_s += job.lost_work(self.clock)
        self.preemptions += 1
        self._release(job)
        trace = self.trace[str(job.id)]
        gpus_per_node, nodes = shape(trace.gpus, self.spec.gpus_per_node)
        self._enqueue(
            PendingJob(job.id, job.team, MODEL, gpus_per_node, nodes, "standard", trace.submit_time, self.left[str(job.id)])
        )

    def _start(self, job_id: str, placement: Any) -> None:
        job = self.pending.pop(job_id, None)
        if job is None:
            self.violations += 1  # admitted twice, or never asked for
            return
        self.wait[job_id] += self.clock - self.pending_since.pop(job_id)
        if job_id in self.first_estimate and job_id not in self.estimated_done:
            made, said = self.first_estimate[job_id]
            self.estimate_outcomes.append((said - made, self.clock - made))
            self.estimated_done.add(job_id)
        for node, gpus in placement.items():
            self.free[node] -= gpus
            if self.free[node] < 0:
                self.violations += 1
        end = self.clock + job.walltime_s
        self.running[job_id] = RunningJob(
            job.id, job.team, MODEL, dict(placement), job.priority, self.clock, end, self.spec.checkpoint_interval_s
        )
        self.held_gpus[job.team] += job.gpus
        heapq.heappush(self.ends, (end, job_id, self.clock))

    def _check(self) -> None:
        self.violations += sum(1 for team, gpus in self.held_gpus.items() if gpus > self.limits.get(team, 0))

    # -- figures --------------------------------------------------------------------------

    def report(self, wall_s: float) -> dict[str, Any]:
        waits = sorted(self.wait[j] for j in self.done)
        jcts = [self.done[j] - self.trace[j].submit_time for j in self.done]
        start = min((j.submit_time for j in self.trace.values()), default=0.0)
        makespan = max(self.done.values(), default=start) - start
        per_team = self._per_team()
        return {
            "jobs": len(self.trace),
            "completed": len(self.done),
            "mean_wait_s": round(statistics.fmean(waits), 1) if waits else 0.0,
            "p50_wait_s": round(_percentile(waits, 50), 1),
            "p95_wait_s": round(_percentile(waits, 95), 1),
            "max_wait_s": round(waits[-1], 1) if waits else 0.0,
            "mean_jct_s": round(statistics.fmean(jcts), 1) if jcts else 0.0,
            "makespan_s": round(makespan, 1),
            "utilization": round(self.busy_gpu_s / (self.total_gpus * makespan), 4) if makespan else 0.0,
            "limit_violations": self.violations,
            "preemptions": self.preemptions,
            "lost_gpu_s": round(self.lost_gpu_s, 1),
            "per_team": per_team,
            "fairness": _fairness(per_team, self.wait, self.trace, self.done),
            **({"estimates": estimate_accuracy(self.estimate_outcomes)} if self.spec.config.explain else {}),
            "wall_s": round(wall_s, 2),
        }

    def _per_team(self) -> dict[str, dict[str, float]]:
        demand: dict[str, float] = defaultdict(float)
        jobs: dict[str, list[str]] = defaultdict(list)
        for job in self.trace.values():
            gpus_per_node, nodes = shape(job.gpus, self.spec.gpus_per_node)
            demand[job.team] += job.duration * gpus_per_node * nodes
            jobs[job.team].append(job.id)
        total_demand, total_busy = sum(demand.values()) or 1.0, self.busy_gpu_s or 1.0
        table = {}
        for team in sorted(jobs):
            done = [j for j in jobs[team] if j in self.done]
            run = sum(self.trace[j].duration for j in done) or 1.0
            table[team] = {
                "jobs": len(jobs[team]),
                "mean_wait_s": round(statistics.fmean(self.wait[j] for j in done), 1) if done else 0.0,
                "gpu_s": round(self.team_busy[team], 1),
                "share_of_gpu_time": round(self.team_busy[team] / total_busy, 4),
                "share_of_demand": round(demand[team] / total_demand, 4),
                "slowdown": round(sum(self.done[j] - self.trace[j].submit_time for j in done) / run, 3),
            }
        return table


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return 0.0
    return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


def _fairness(
    per_team: dict[str, dict[str, float]], wait: dict[str, float], trace: dict[str, TraceJob], done: dict[str, float]
) -> dict[str, float]:
    slowdowns = [t["slowdown"] for t in per_team.values()]
    squares = sum(s * s for s in slowdowns)
    jain = sum(slowdowns) ** 2 / (len(slowdowns) * squares) if squares else 1.0  # nothing finished: no unfairness seen
    demand = sorted(per_team, key=lambda t: per_team[t]["share_of_demand"])
    small = set(demand[: len(demand) // 2])
    small_waits = [wait[j] for j in done if trace[j].team in small]
    all_waits = [wait[j] for j in done]
    mean_all = statistics.fmean(all_waits) if all_waits else 0.0
    ratio = statistics.fmean(small_waits) / mean_all if small_waits and mean_all else 0.0
    return {
        "jain_slowdown": round(jain, 4),
        "max_team_slowdown": round(max(slowdowns, default=1.0), 3),
        "small_team_wait_ratio": round(ratio, 4),
    }


def replay(trace: Sequence[TraceJob], spec: ReplaySpec, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run the whole trace under `spec.policy` and return its figures; `progress` hears 0-1 as it goes."""
    if spec.policy not in POLICIES:
        raise ValueError(f"unknown policy {spec.policy!r}; choose from {', '.join(POLICIES)}")
    started, cpu_started = time.perf_counter(), time.process_time()
    simulation = _Simulation(trace, spec)
    simulation.run(progress)
    report = simulation.report(time.perf_counter() - started)
    # CPU seconds next to wall seconds: on a shared machine the wall time also measures the neighbours.
    report["cpu_s"] = round(time.process_time() - cpu_started, 2)
    return report


# -- command line (shared by `python -m jobs.policy.replay` and `manage.py replay_trace`) ----


def estimate_accuracy(outcomes: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """How the first start estimate of each waiting job came out: the error (actual minus estimated wait,
    seconds; positive = later than said) and, for estimates of a wait of at least ten minutes, the ratio
    of actual to estimated wait, at the 10th, 50th and 90th percentiles."""
    errors = sorted(actual - said for said, actual in outcomes)
    ratios = sorted(actual / said for said, actual in outcomes if said >= 600)
    return {
        "jobs": len(outcomes),
        "error_s": {f"p{q}": round(_percentile(errors, q), 1) for q in (10, 50, 90)},
        "late_fraction": round(sum(e > 60 for e in errors) / len(errors), 3) if errors else 0.0,
        "ratio": {f"p{q}": round(_percentile(ratios, q), 3) for q in (10, 50, 90)},
        "ratio_jobs": len(ratios),
    }


def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
    parser.add_argument("trace", help="CSV with job_id, submit_time_s, duration_s, num_gpus, team")
    parser.add_argument("--nodes", type=int, default=96)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--policy", choices=POLICIES, default="fair")
    parser.add_argument("--baseline", choices=POLICIES, default=None, help="a second policy to compare with")
    parser.add_argument(
        "--quotas", default=None, help="JSON file of per-team quotas (default: equal guarantees, whole grid as limit)"
    )
    parser.add_argument("--checkpoint-interval", type=float, default=1800.0, help="seconds of run time between checkpoints")
    parser.add_argument("--half-life", type=float, default=PolicyConfig().half_life_s, help="usage decay half-life, seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--estimates", action="store_true", help="explain every cycle and measure how each job's first start estimate came out"
    )


def run_from_options(options: dict[str, Any]) -> dict[str, Any]:
    """Replay the trace under the chosen policy (and baseline) and return {policy: figures, ...}."""
    trace = load_trace(options["trace"])
    quotas = load_quotas(options["quotas"]) if options.get("quotas") else None
    policies = [options["policy"]] + ([options["baseline"]] if options.get("baseline") not in (None, options["policy"]) else [])
    overrides: dict[str, Any] = options.get("policy_config") or {}  # other PolicyConfig fields, for experiments
    config = PolicyConfig(explain=bool(options.get("estimates")), half_life_s=options["half_life"], **overrides)
    report: dict[str, Any] = {
        "trace": str(options["trace"]),
        "nodes": options["nodes"],
        "gpus_per_node": options["gpus_per_node"],
    }
    for policy in policies:
        spec = ReplaySpec(options["nodes"], options["gpus_per_node"], policy, options["checkpoint_interval"], quotas, config)
        report[policy] = replay(trace, spec)
    return report


SUMMARY_KEYS = (
    *("completed", "mean_wait_s", "p50_wait_s", "p95_wait_s", "max_wait_s", "mean_jct_s", "makespan_s", "utilization"),
    *("limit_violations", "preemptions", "lost_gpu_s", "wall_s", "cpu_s"),
)


def format_report(report: dict[str, Any], write: Callable[[str], Any]) -> None:
    policies = [p for p in POLICIES if p in report]
    write(f"{'':<18}" + "".join(f"{p:>14}" for p in policies))
    for key in SUMMARY_KEYS:
        write(f"{key:<18}" + "".join(f"{report[p][key]:>14}" for p in policies))
    for key in ("jain_slowdown", "max_team_slowdown", "small_team_wait_ratio"):
        write(f"{key:<18}" + "".join(f"{report[p]['fairness'][key]:>14}" for p in policies))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Replay a GPU job trace through the admission policy.")
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    report = run_from_options(options)
    if options["json"]:
        print(json.dumps(report, indent=2))
    else:
        format_report(report, print)


if __name__ == "__main__":
    main()
