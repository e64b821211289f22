"""Explanations for waiting jobs: reason, detail, place in line, and an estimated start.

Place in line is the order the next cycle would consider the job in (class, fair share after this
cycle's admissions, age): `team_position` among its team's waiting jobs, `pool_position` among all
waiting jobs for the same GPU model (the pools of one model share one line). Held jobs stand outside
the line. The estimated start is the later of when capacity frees up for its shape and, for a quota
wait, when the team's own jobs give back enough GPUs, both read from running jobs' expected ends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from operator import itemgetter
from typing import cast

from jobs.policy.ledger import Ledger
from jobs.policy.model import ExplanationRow, Explanations, JobId, PendingJob, PriorityClassSpec, Reason, Reservation
from jobs.policy.timeline import StartEstimator

NO_ESTIMATE = frozenset({Reason.BUDGET, Reason.NO_NODES})


def positions(
    jobs: Mapping[JobId, PendingJob], line_keys: Mapping[JobId, tuple[int, float, float]]
) -> dict[JobId, tuple[int, int]]:
    """(team position, pool position), both from 1, for the jobs in `line_keys`, in that key's order."""
    team_seen: dict[str, int] = defaultdict(int)
    model_seen: dict[str, int] = defaultdict(int)
    result: dict[JobId, tuple[int, int]] = {}
    for job_id in sorted(line_keys, key=line_keys.__getitem__):
        job = jobs[job_id]
        team = team_seen[job.team] = team_seen[job.team] + 1
        pool = model_seen[job.gpu_model] = model_seen[job.gpu_model] + 1
        result[job_id] = (team, pool)
    return result


def estimated_start(
    job: PendingJob,
    reason: Reason,
    spec: PriorityClassSpec,
    ledger: Ledger,
    estimator: StartEstimator,
    reserved: Mapping[JobId, Reservation],
) -> float | None:
    if reason in NO_ESTIMATE:
        return None
    if job.id in reserved:
        return reserved[job.id].start
    start = estimator.capacity_start(job)
    if start is None or reason is not Reason.QUOTA:
        return start
    quota = ledger.quota(job.team, job.gpu_model)
    if quota is None:
        return None
    cap = quota.limit if spec.may_borrow else quota.guarantee
    must_release = ledger.used[(job.team, job.gpu_model)] + job.gpus - cap
    by_quota = estimator.quota_start(job.team, job.gpu_model, must_release)
    return None if by_quota is None else max(start, by_quota)


LineKey = tuple[int, float, float]  # (-class rank, fair share or -inf when starving, submit time)


def explain_waiting(
    waiting: Mapping[JobId, tuple[Reason, str]],
    jobs: Mapping[JobId, PendingJob],
    specs: Mapping[str, PriorityClassSpec],
    line: list[tuple[LineKey, PendingJob]],
    ledger: Ledger,
    estimator: StartEstimator,
    reservations: list[Reservation],
) -> Explanations:
    """Every waiting job's row; `line` holds the jobs in line with their keys, in `waiting`'s order."""
    reserved = {r.job_id: r for r in reservations}
    # Jobs of one team, shape and reason share their estimate; computing it once per group keeps
    # ten thousand explanations cheap.
    starts: dict[tuple[str, str, str, int, int, Reason], float | None] = {}

    def start_of(job: PendingJob, reason: Reason) -> float | None:
        if job.id in reserved:
            return reserved[job.id].start
        group = (job.team, job.gpu_model, job.priority, job.gpus_per_node, job.nodes, reason)
        if group not in starts:
            starts[group] = estimated_start(job, reason, specs[job.priority], ledger, estimator, reserved)
        return starts[group]

    rows: dict[JobId, ExplanationRow | None] = dict.fromkeys(waiting)  # filled below, in waiting's order
    team_seen: dict[str, int] = defaultdict(int)
    model_seen: dict[str, int] = defaultdict(int)
    line.sort(key=_first)  # stable: equal keys keep waiting's order, as positions() would
    for _, job in line:
        team = team_seen[job.team] = team_seen[job.team] + 1
        pool = model_seen[job.gpu_model] = model_seen[job.gpu_model] + 1
        reason, detail = waiting[job.id]
        group = (job.team, job.gpu_model, job.priority, job.gpus_per_node, job.nodes, reason)
        if group in starts and job.id not in reserved:
            rows[job.id] = (reason, detail, team, pool, starts[group])
        else:
            rows[job.id] = (reason, detail, team, pool, start_of(job, reason))
    for job_id, row in rows.items():
        if row is None:  # outside the line (held)
            reason, detail = waiting[job_id]
            rows[job_id] = (reason, detail, None, None, start_of(jobs[job_id], reason))
    return Explanations(cast(dict[JobId, ExplanationRow], rows))


_first = itemgetter(0)
