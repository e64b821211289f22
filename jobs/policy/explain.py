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


def explain_waiting(
    waiting: Mapping[JobId, tuple[Reason, str]],
    specs: Mapping[str, PriorityClassSpec],
    line: list[PendingJob],
    held: list[PendingJob],
    ledger: Ledger,
    estimator: StartEstimator,
    reservations: list[Reservation],
) -> Explanations:
    """Every waiting job's row: `line` holds the jobs in line in their order, `held` those outside it.

    A job's estimate depends only on its team, model, class, shape and reason, so it is computed once
    per such group; jobs that wait for the same reason object (the cycle gives the jobs of one group
    that wait alike one tuple) find it by that object, without building the group's key. A reserved
    job's estimate is its reservation's start.
    """
    no_reservations: Mapping[JobId, Reservation] = {}
    starts: dict[int, float | None] = {}  # id of a wait tuple -> the estimate of the jobs holding it
    by_group: dict[tuple[str, str, str, int, int, Reason], float | None] = {}
    rows: dict[JobId, ExplanationRow] = {}
    team_seen: dict[str, int] = defaultdict(int)
    model_seen: dict[str, int] = defaultdict(int)
    for job in line:
        team = team_seen[job.team] = team_seen[job.team] + 1
        pool = model_seen[job.gpu_model] = model_seen[job.gpu_model] + 1
        wait = waiting[job.id]
        key = id(wait)
        if key in starts:
            start = starts[key]
        else:  # the first job of this wait: its group may have met the reason before
            group = (job.team, job.gpu_model, job.priority, job.gpus_per_node, job.nodes, wait[0])
            if group not in by_group:
                by_group[group] = estimated_start(job, wait[0], specs[job.priority], ledger, estimator, no_reservations)
            start = starts[key] = by_group[group]
        rows[job.id] = (wait[0], wait[1], team, pool, start)
    for job in held:
        reason, detail = waiting[job.id]
        rows[job.id] = (reason, detail, None, None, estimated_start(job, reason, specs[job.priority], ledger, estimator, {}))
    for reservation in reservations:
        row = rows.get(reservation.job_id)
        if row is not None:
            rows[reservation.job_id] = (*row[:4], reservation.start)
    return Explanations(rows)
