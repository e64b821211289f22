"""The jobs app's only write path: submit, transition, admit, dispatch, sync, cancel, reap.

Views, API, consumers and tasks call these functions and nothing else writes a Job. Every state
change is a conditional UPDATE plus a JobEvent; Celery work and websocket messages go out only
after the transaction commits.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.utils import timezone

from cluster import services as cluster_services
from cluster.backends import ClusterBackend, get_backend
from cluster.backends.base import BackendError, JobRequest, RemoteJob, RemoteJobState
from cluster.models import Pool
from cluster.states import PoolKind
from jobs import admission, bulk, policy
from jobs.models import Job, JobEvent, JobTemplate, PendingChange
from jobs.spec import JobSpec, ModelShape, SpecContext, SpecError, TemplateInfo, validate
from jobs.states import HOLDS_GPUS, ON_BACKEND, TERMINAL, TRANSITIONS, WAITING, JobState, PendingReason
from portal.access import is_operator, leads_team
from portal.broadcast import send_on_commit
from portal.locks import LOCK_SQL, advisory_key, transaction_lock
from portal.memo import Memo
from portal.models import Team
from portal.queue import after_commit, enqueue_now
from portal.states import move
from quotas import restrictions
from quotas import services as quota_services
from quotas.models import PriorityClass

log = logging.getLogger(__name__)
ADMISSION_LOCK = "admission-cycle"


class JobActionError(Exception):
    """An action on a job was refused; the message says why."""


class JobForbidden(JobActionError):
    """The user may see the job but not do this to it."""


# --- transitions -----------------------------------------------------------------------------


def transition(job_id: int, to: JobState, *, actor: str = "system", why: str = "", **fields: Any) -> bool:
    """Move a job to `to` if the table allows it from its current state; False if it did not move."""
    now = timezone.now()
    with transaction.atomic():
        left = move(Job, job_id, to, TRANSITIONS, state_changed_at=now, **fields)
        if left is None:
            return False
        JobEvent.objects.create(
            job_id=job_id, at=now, from_state=left, to_state=to, actor=actor, reason=why[:300], pool=str(fields.get("pool") or "")
        )
        _announce(job_id)
    return True


def _announce(job_id: int) -> None:
    send_on_commit(f"job.{job_id}", {"type": "job.changed", "job": job_id})
    send_on_commit("grid", {"type": "grid.changed"})


# --- submission ------------------------------------------------------------------------------


def template_info(template: JobTemplate) -> TemplateInfo:
    return TemplateInfo(
        slug=template.slug,
        kind=template.kind,
        image=template.image,
        command=tuple(template.command),
        params=template.params,
        gpu_model=template.gpu_model,
        gpus_per_node=template.gpus_per_node,
        nodes=template.nodes,
        walltime_s=template.walltime_s,
        max_gpus_per_node=template.max_gpus_per_node,
        max_nodes=template.max_nodes,
        max_walltime_s=template.max_walltime_s,
        allowed_gpu_models=tuple(template.allowed_gpu_models),
        checkpoint_dir=template.checkpoint_dir,
    )


@dataclass(frozen=True)
class GridShape:
    """What validation needs of the grid: the largest node and total GPUs per model, the priority classes."""

    models: dict[str, ModelShape]
    priorities: frozenset[str]
    class_teams: dict[str, frozenset[str]]


def _grid_shape() -> GridShape:
    capacity = cluster_services.capacity_with_bursts()
    return GridShape(
        models={m: ModelShape(c.max_gpus_per_node, c.total_gpus) for m, c in capacity.items()},
        priorities=frozenset(PriorityClass.objects.values_list("name", flat=True)) or frozenset({"standard"}),
        class_teams=quota_services.class_teams(),
    )


# Read for every submission, changed by operators now and then: kept per process for
# SUBMIT_GRID_CACHE_S and dropped at once when this process saves a node, pool, policy or class.
grid_shape = Memo(_grid_shape, lambda: settings.SUBMIT_GRID_CACHE_S)
cluster_services.capacity_changed.connect(grid_shape.forget, dispatch_uid="jobs-grid-shape")
post_save.connect(grid_shape.forget, sender=PriorityClass, dispatch_uid="jobs-grid-shape-classes")
post_delete.connect(grid_shape.forget, sender=PriorityClass, dispatch_uid="jobs-grid-shape-classes")
m2m_changed.connect(grid_shape.forget, sender=PriorityClass.teams.through, dispatch_uid="jobs-grid-shape-class-teams")


def member_teams(user: Any) -> dict[int, Team]:
    """The user's teams by id, with only what submitting needs of them (their slugs; the rest is read if asked for)."""
    return {pk: Team.from_db(None, ["id", "slug"], (pk, slug)) for pk, slug in user.team_slugs.items()}


def spec_context(user: Any, template: JobTemplate | None = None, teams: dict[int, Team] | None = None) -> SpecContext:
    teams = member_teams(user) if teams is None else teams
    shape = grid_shape.get()
    return SpecContext(
        teams={team.slug: team.pk for team in teams.values()},
        priorities=shape.priorities,
        class_teams=shape.class_teams,
        grid=shape.models,
        known_gpu_models=cluster_services.known_gpu_models(),
        max_walltime_s=settings.JOB_MAX_WALLTIME_S,
        max_script_bytes=settings.JOB_MAX_SCRIPT_BYTES,
        max_array_size=settings.JOB_MAX_ARRAY_SIZE,
        template=template_info(template) if template else None,
    )


def resolve_template(raw: dict[str, Any]) -> JobTemplate | None:
    slug = raw.get("template")
    if slug in (None, ""):
        return None
    template = JobTemplate.objects.filter(slug=str(slug)).first()
    if template is None:
        raise SpecError({"template": [f"no template called {str(slug)[:60]!r}"]})
    return template


@dataclass(frozen=True)
class Submission:
    """What one submission created: a job, or every element of an array."""

    job_ids: list[int]  # an array's in element order
    array_id: uuid.UUID | None = None
    job: Job | None = None  # the job itself, with team, owner and template attached; None for an array

    def jobs(self) -> list[Job]:
        """The created jobs as rows; an array's are read back, in element order."""
        if self.job is not None:
            return [self.job]
        return list(
            Job.objects.select_related("team", "owner", "template").filter(array_id=self.array_id).order_by("array_index")
        )


def submit_request(user: Any, raw: dict[str, Any]) -> Submission:
    """Validate and create a job (or every element of an array) in one transaction."""
    template = resolve_template(raw)
    teams = member_teams(user)
    spec = validate(raw, spec_context(user, template, teams))
    return create_jobs(user, spec, template, team=teams[spec.team_id])


def submit(user: Any, raw: dict[str, Any]) -> list[Job]:
    """`submit_request`, answered with the created jobs as rows."""
    return submit_request(user, raw).jobs()


def check_pending_limits(user: Any, team_id: int, adding: int) -> None:
    """SpecError when `adding` more pending jobs would take the team past MAX_PENDING_JOBS_PER_TEAM or the
    user past MAX_PENDING_JOBS_PER_USER. Call inside the transaction that creates them: the team's
    lock, then the owner's, make concurrent submits count each other's jobs, so two requests cannot both
    squeeze in (always in that order, so two submits never wait for each other's second lock)."""
    transaction_lock(_pending_lock(team_id))
    transaction_lock(_owner_lock(user.pk))
    counts = _pending_counts_sql(team_id, user.pk)
    with connection.cursor() as cursor:
        cursor.execute(counts.text, counts.params)
        team_now, owner_now, team_rows = cursor.fetchone()
    _fold_if_long(team_id, int(team_rows))
    _refuse_past_limits(int(team_now), int(owner_now), adding)


def _pending_lock(team_id: int) -> str:
    return f"pending-jobs-team-{team_id}"


def _owner_lock(owner_id: int) -> str:
    return f"pending-jobs-owner-{owner_id}"


def _refuse_past_limits(team_now: int, owner_now: int, adding: int) -> None:
    team_limit, user_limit = settings.MAX_PENDING_JOBS_PER_TEAM, settings.MAX_PENDING_JOBS_PER_USER
    if team_now + adding > team_limit:
        raise SpecError({"pending_jobs": [_over_limit("your team has", team_now, team_limit, adding, "its")]})
    if owner_now + adding > user_limit:
        raise SpecError({"pending_jobs": [_over_limit("you have", owner_now, user_limit, adding, "your")]})


def _over_limit(who: str, now: int, limit: int, adding: int, whose: str) -> str:
    return f"{who} {now} jobs waiting; {adding} more would pass {whose} limit of {limit}"


# A team's pending changes are folded into one row per owner once it has more rows than this.
PENDING_FOLD_AT = 256


def _pending_counts_sql(team_id: int, owner_id: int) -> bulk.Sql:
    """`SELECT team_now, owner_now, team_rows`: the team's and the owner's pending jobs, as the sums of
    their pending changes (the database's triggers keep them), and how many change rows the team has."""
    table = connection.ops.quote_name(PendingChange._meta.db_table)
    text = (
        "SELECT COALESCE(SUM(CASE WHEN team_id = %s THEN delta ELSE 0 END), 0) AS team_now, "
        "COALESCE(SUM(CASE WHEN owner_id = %s THEN delta ELSE 0 END), 0) AS owner_now, "
        "COALESCE(SUM(CASE WHEN team_id = %s THEN 1 ELSE 0 END), 0) AS team_rows "
        f"FROM {table} WHERE team_id = %s OR owner_id = %s"
    )
    return bulk.Sql(text, (team_id, owner_id, team_id, team_id, owner_id))


def _fold_if_long(team_id: int, rows: int) -> None:
    if rows > PENDING_FOLD_AT:
        fold_pending_changes(team_id)


def fold_pending_changes(team_id: int) -> None:
    """Replace the team's pending changes with one row per owner holding their sum; call under the team's
    pending-jobs lock, which every folding of the team takes. Only rows up to the newest this
    transaction sees are folded: a change a concurrent transaction has not committed yet is neither
    summed nor deleted, and counts when it commits."""
    table = connection.ops.quote_name(PendingChange._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX(id) FROM {table} WHERE team_id = %s", [team_id])
        (newest,) = cursor.fetchone()
        if newest is None:
            return
        cursor.execute(
            f"INSERT INTO {table} (team_id, owner_id, delta) SELECT team_id, owner_id, SUM(delta) FROM {table} "
            "WHERE team_id = %s AND id <= %s GROUP BY team_id, owner_id HAVING SUM(delta) <> 0",
            [team_id, newest],
        )
        cursor.execute(f"DELETE FROM {table} WHERE team_id = %s AND id <= %s", [team_id, newest])


def create_jobs(user: Any, spec: JobSpec, template: JobTemplate | None, team: Team | None = None) -> Submission:
    """Create the jobs of a validated spec and their `submitted` events in one transaction, within the
    pending limits; the admission task is enqueued and the grid told once it commits."""
    now = timezone.now()
    job = _new_job(user, spec, template, now)
    with transaction.atomic():
        if spec.array_indices:
            check_pending_limits(user, spec.team_id, len(spec.array_indices))
            submission = _create_array(job, spec.array_indices, user.username)
        elif connection.vendor == "postgresql":
            submission = _create_one_within_limits(job, user.username)
        else:
            check_pending_limits(user, spec.team_id, 1)
            Job.objects.bulk_create([job])
            JobEvent.objects.bulk_create([_submitted(job, user.username)])
            submission = Submission(job_ids=[job.pk], job=job)
        send_on_commit("grid", {"type": "grid.changed"})
        after_commit("jobs.tasks.admission_cycle")
    if team is not None and team.pk == spec.team_id:
        job.team = team
    return submission


def _submitted(job: Job, actor: str) -> JobEvent:
    return JobEvent(job=job, at=job.submitted_at, to_state=JobState.PENDING, actor=actor, reason="submitted")


def _create_one_within_limits(job: Job, actor: str) -> Submission:
    """PostgreSQL, one round trip: the team's and then the owner's pending-jobs locks, then one
    statement that reads the team's and the owner's pending counts and inserts the job and its
    `submitted` event only when both stay within their limits (the trigger then writes the job's
    pending change). The statements run one after another in the open transaction; under read
    committed the last takes its snapshot once the locks are held, so it counts every job that a
    concurrent submit to the team or by the owner committed, as `check_pending_limits` does."""
    quote = connection.ops.quote_name
    counts = _pending_counts_sql(job.team_id, job.owner_id)
    limits = (settings.MAX_PENDING_JOBS_PER_TEAM, settings.MAX_PENDING_JOBS_PER_USER)
    insert_job = bulk.insert_select(
        job, {}, bulk.Sql("counts WHERE team_now + 1 <= %s AND owner_now + 1 <= %s", limits), returning=("id",)
    )
    insert_event = bulk.insert_select(_submitted(job, actor), {"job_id": bulk.Sql(f"created.{quote('id')}")}, bulk.Sql("created"))
    text = (
        f"{LOCK_SQL}; {LOCK_SQL}; WITH counts AS ({counts.text}), created AS ({insert_job.text}), events AS ({insert_event.text}) "
        f"SELECT team_now, owner_now, team_rows, (SELECT {quote('id')} FROM created) FROM counts"
    )
    locks = (advisory_key(_pending_lock(job.team_id)), advisory_key(_owner_lock(job.owner_id)))
    params = (*locks, *counts.params, *insert_job.params, *insert_event.params)
    with connection.cursor() as cursor:
        cursor.execute(text, params)
        cursor.nextset()  # past the locks' results
        cursor.nextset()
        team_now, owner_now, team_rows, job_id = cursor.fetchone()
    _fold_if_long(job.team_id, int(team_rows))
    if job_id is None:
        _refuse_past_limits(int(team_now), int(owner_now), 1)
        raise RuntimeError(f"job not created with {team_now} pending in the team and {owner_now} of the owner's")
    job.pk = job_id
    job._state.adding, job._state.db = False, connection.alias
    return Submission(job_ids=[job_id], job=job)


def _new_job(user: Any, spec: JobSpec, template: JobTemplate | None, now: datetime) -> Job:
    """The job of a spec; for an array, what its elements share (name, env and index are set per element)."""
    return Job(
        team_id=spec.team_id,
        owner=user,
        name=spec.name,
        kind=spec.kind,
        template=template,
        image=spec.image,
        command=list(spec.command),
        script=spec.script,
        env=spec.env,
        gpu_model=spec.gpu_model,
        gpus_per_node=spec.gpus_per_node,
        nodes=spec.nodes,
        gpus=spec.gpus,
        priority=spec.priority,
        walltime_s=spec.walltime_s,
        checkpoint_dir=spec.checkpoint_dir,
        checkpoint_interval_s=spec.checkpoint_interval_s,
        array_id=uuid.uuid4() if spec.array_indices else None,
        submitted_at=now,
        state_changed_at=now,
    )


def _create_array(shared: Job, indices: tuple[int, ...], actor: str) -> Submission:
    """Every element of an array as one INSERT ... SELECT over the indices, and their `submitted` events as
    another over the inserted rows: the database makes the rows, not a model instance per element."""
    insert_jobs = bulk.insert_select(
        shared,
        {"name": bulk.name_with_index(shared.name), "env": bulk.env_with_index(shared), "array_index": bulk.Sql("element.i")},
        bulk.Sql("element"),
        prefix=bulk.elements(indices),
        returning=("id", "array_index"),
    )
    event = JobEvent(at=shared.submitted_at, to_state=JobState.PENDING, actor=actor, reason="submitted")
    job_table = connection.ops.quote_name(Job._meta.db_table)
    insert_events = bulk.insert_select(
        event,
        {"job_id": bulk.Sql(f"{job_table}.{connection.ops.quote_name('id')}")},
        bulk.Sql(f"{job_table} WHERE {connection.ops.quote_name('array_id')} = %s", (bulk.prepared(shared, "array_id"),)),
    )
    with connection.cursor() as cursor:
        cursor.execute(insert_jobs.text, insert_jobs.params)
        created = sorted(cursor.fetchall(), key=lambda row: row[1])
        cursor.execute(insert_events.text, insert_events.params)
        if cursor.rowcount != len(created):
            raise RuntimeError(f"array {shared.array_id}: {cursor.rowcount} events for {len(created)} jobs")
    return Submission(job_ids=[row[0] for row in created], array_id=shared.array_id)


def record_past_job(
    user: Any, raw: dict[str, Any], *, pool: str, submitted_at: datetime, started_at: datetime, finished_at: datetime,
    state: JobState = JobState.SUCCEEDED, exit_code: int = 0,
) -> Job:  # fmt: skip
    """A job that already ran (demo data, imports of earlier history): validated as a submission, stored
    finished with the events a real run leaves (submitted, admitted to `pool`, dispatched, running, the end),
    so metering and invoices treat it as any other. Nothing goes to the backend."""
    if state not in TERMINAL:
        raise JobActionError(f"state: a past job has ended ({', '.join(sorted(TERMINAL))}), not {state}")
    if not submitted_at <= started_at < finished_at <= timezone.now():
        raise JobActionError("finished_at: need submitted_at <= started_at < finished_at <= now")
    template = resolve_template(raw)
    spec = validate(raw, spec_context(user, template))
    if spec.array_indices:
        raise JobActionError("array: a past job is one job")
    with transaction.atomic():
        job = Job.objects.create(
            team_id=spec.team_id, owner=user, name=spec.name, kind=spec.kind, template=template, image=spec.image,
            command=list(spec.command), script=spec.script, env=spec.env, gpu_model=spec.gpu_model,
            gpus_per_node=spec.gpus_per_node, nodes=spec.nodes, gpus=spec.gpus, priority=spec.priority,
            walltime_s=spec.walltime_s, checkpoint_dir=spec.checkpoint_dir, checkpoint_interval_s=spec.checkpoint_interval_s,
            state=state, reason=PendingReason.NONE, submitted_at=submitted_at, state_changed_at=finished_at,
            admitted_at=started_at, dispatched_at=started_at, started_at=started_at, finished_at=finished_at,
            exit_code=exit_code, pool=pool, backend=get_backend().name,
        )  # fmt: skip
        steps = [
            (submitted_at, "", JobState.PENDING, "submitted", ""),
            (started_at, JobState.PENDING, JobState.ADMITTED, f"admitted to {pool}", pool),
            (started_at, JobState.ADMITTED, JobState.DISPATCHED, "", ""),
            (started_at, JobState.DISPATCHED, JobState.RUNNING, "", ""),
            (finished_at, JobState.RUNNING, state, f"exit code {exit_code}", ""),
        ]
        JobEvent.objects.bulk_create(
            [
                JobEvent(job=job, at=at, from_state=left, to_state=to, actor=user.username, reason=why, pool=where)
                for at, left, to, why, where in steps
            ]
        )
    return job


# --- cancel ----------------------------------------------------------------------------------


def can_cancel(user: Any, job: Job) -> bool:
    return bool(job.owner_id == user.pk or is_operator(user) or leads_team(user, job.team_id))


def cancel(user: Any, job: Job, reason: str = "") -> Job:
    if not can_cancel(user, job):
        raise JobForbidden("only the job's owner, a lead of its team or an operator may cancel it")
    if job.state in TERMINAL:
        raise JobActionError(f"job #{job.pk} has already ended ({job.state})")
    was_on_backend = job.state in HOLDS_GPUS
    with transaction.atomic():
        moved = transition(
            job.pk, JobState.CANCELLED, actor=user.username, why=reason or "cancelled by user",
            finished_at=timezone.now(), reason_detail="",
        )  # fmt: skip
        if moved and was_on_backend:
            after_commit("jobs.tasks.cancel_on_backend", job.pk)
    if not moved:
        job.refresh_from_db()
        if job.state not in TERMINAL:
            raise JobActionError(f"job #{job.pk} changed state while cancelling; try again")
    job.refresh_from_db()
    return job


def cancel_on_backend(job_id: int, backend: ClusterBackend | None = None) -> bool:
    """Make sure a cancelled job is not running on the backend; safe to repeat."""
    backend = backend or get_backend()
    remote = backend.find_job(job_id)
    if remote is None or remote.state in (RemoteJobState.SUCCEEDED, RemoteJobState.FAILED, RemoteJobState.CANCELLED):
        return False
    backend.cancel(remote.backend_job_id)
    return True


def preempt_on_backend(job_id: int, backend: ClusterBackend | None = None) -> bool:
    """Ask the backend to stop a preempted job after its grace period; sync then requeues it."""
    job = Job.objects.filter(pk=job_id, state=JobState.PREEMPTING).first()
    if job is None:
        return False
    backend = backend or get_backend(job.backend or None)
    remote = backend.find_job(job_id)
    if remote is None or remote.state not in (RemoteJobState.PENDING, RemoteJobState.RUNNING):
        return _requeue(job_id, "preempted")
    backend.preempt(remote.backend_job_id, settings.PREEMPT_GRACE_S)
    return True


# --- admission -------------------------------------------------------------------------------


def reserved_by_node() -> dict[str, int]:
    """GPUs handed out on each node to jobs that hold them."""
    reserved: dict[str, int] = defaultdict(int)
    for placement in Job.objects.filter(state__in=HOLDS_GPUS).values_list("placement", flat=True):
        for node, gpus in placement.items():
            reserved[node] += gpus
    return reserved


def run_admission_cycle(backend: ClusterBackend | None = None) -> list[int]:
    """One cycle of the fair policy, under the admission lock so concurrent cycles cannot over-admit.

    Admits what fits, starts preempting the victims the policy picks to give teams their guarantee
    back, and stores every waiting job's reason, positions and estimated start. Where the backend
    queues jobs itself (`backlog_gpus()`, Slurm's `SLURM_BACKLOG`), it then admits a bounded
    backlog beyond the free GPUs (`jobs.admission.Backlog`). Returns the admitted jobs in the policy's
    order, the backlog after the rest, so dispatch hands them over in that order.
    """
    backlog_gpus = _backlog_gpus(backend)
    with transaction.atomic():
        transaction_lock(ADMISSION_LOCK)
        waiting, holding = admission.snapshot_jobs()
        if not waiting:
            return []
        restricted = restrictions.active(j.team_id for j in waiting)
        if _apply_holds(waiting, restricted):
            waiting, holding = admission.snapshot_jobs()
        now = timezone.now()
        classes = admission.classes()
        known = {c.name for c in classes}
        lowered = frozenset(j.team.slug for j in waiting if restrictions.LOWER_PRIORITY in restricted.get(j.team_id, set()))
        running = admission.running_jobs(holding, known, now, idle=cluster_services.idle_reclaimable_jobs())
        pairs = {(j.team.slug, j.gpu_model) for j in [*waiting, *holding]}
        config = policy.PolicyConfig(
            half_life_s=settings.FAIRSHARE_HALF_LIFE_S,
            classes=classes,
            # While earlier victims are still stopping their GPUs count as held; choosing more
            # victims for the same demand would preempt twice.
            max_reclaims_per_cycle=0 if any(j.state == JobState.PREEMPTING for j in holding) else 4,
        )
        team_usage = admission.usage(now, running, config.half_life_s)
        reserved = reserved_by_node()
        teams_only = cluster_services.teams_only_nodes()
        grid = admission.cluster(reserved, teams_only)
        team_quotas = admission.quotas(pairs)
        # Each job's start under strict FIFO: the fair policy's bound on the worst wait (PolicyConfig.fifo_bound)
        starts = admission.fifo_starts([*waiting, *holding], grid, team_quotas)
        pending = admission.pending_jobs(waiting, classes, lowered, starts)
        running = admission.with_fifo_starts(running, starts)
        # Fair share may count idle allocation against a team (FAIRSHARE_IDLE_WEIGHT; 0: off). The
        # stored usage stays what the teams held.
        ranked_usage = team_usage
        if settings.FAIRSHARE_IDLE_WEIGHT > 0:
            shares = admission.idle_shares(now, config.half_life_s)
            ranked_usage = policy.with_idle_penalty(team_usage, shares, settings.FAIRSHARE_IDLE_WEIGHT)
        run = functools.partial(
            policy.run_cycle,
            now=now.timestamp(),
            cluster=grid,
            quotas=team_quotas,
            running=running,
            usage=ranked_usage,
            config=config,
        )
        # Nodes only some teams may use are pools of their own that only those teams' jobs may use, placed,
        # reserved or reclaimed on (`admission.cluster`); jobs they would have fitted are told why they wait.
        result = run(pending=pending)
        kept_off_burst = admission.kept_off_bursts(result.waiting, pending, grid, teams_only)
        quota_services.store_usage(team_usage, now)
        no_burst = {j.pk for j in waiting if restrictions.DENY_BURSTS in restricted.get(j.team_id, set())}
        allowed, kept_off_cloud = _without_cloud_for(result.admitted, no_burst)
        queue = admission.BacklogView.of(grid, reserved, holding, classes)
        by_id = {j.pk: j for j in waiting}
        allowed, behind_backlog = queue.split_preemptible(allowed, by_id)
        admitted = _admit(allowed, now)
        _preempt(result.preempted)
        backlogged: list[int] = []
        if backlog_gpus > 0:
            backlog = admission.Backlog(
                view=queue, budget_gpus=backlog_gpus, now=now.timestamp(), quotas=team_quotas, usage=team_usage, config=config
            )
            chosen = backlog.choose(pending, running, allowed, result, by_id)
            backlogged = _admit(chosen, now, queued=True)
        _record_explanations(waiting, result.waiting, {a.job_id for a in allowed} | set(backlogged))
        _explain_kept_off_cloud(kept_off_cloud)
        _explain_kept_off_burst(kept_off_burst)
        _explain_behind_backlog(behind_backlog)
    return admitted + backlogged


def _explain_kept_off_burst(kept: Mapping[policy.JobId, str]) -> None:
    for job_id, why in kept.items():
        Job.objects.filter(pk=job_id, state__in=WAITING).update(
            reason=PendingReason.BURST_TEAMS, reason_detail=f"waits for GPUs its team may use: {why}"[:300]
        )


def _backlog_gpus(backend: ClusterBackend | None) -> int:
    """The backend's backlog bound; 0 (admit onto free GPUs only) while no backend is available."""
    try:
        return (backend or get_backend()).backlog_gpus()
    except BackendError as exc:
        log.warning("admission without a backlog: %s", exc)
        return 0


def admit_and_dispatch(backend: ClusterBackend | None = None) -> list[int]:
    """One admission cycle, then hand what it admitted to the backend here and now.

    No broker hop lies between admit and dispatch, so a broker that restarts empty cannot strand an
    admitted job until the reaper notices. Dispatch runs after the cycle's transaction (the
    admission lock is free by then) with one backend listing for the whole wave. A backend that
    is briefly away leaves the rest to the retrying `dispatch_jobs` task, and to the reaper if even
    that cannot be queued.
    """
    admitted = run_admission_cycle(backend)
    if admitted:
        try:
            dispatch_many(admitted, backend)
        except BackendError as exc:
            if not exc.retryable:
                raise
            log.warning("dispatch of %d admitted jobs deferred: %s", len(admitted), exc)
            enqueue_now("jobs.tasks.dispatch_jobs", admitted)
    return admitted


def _apply_holds(waiting: list[Job], restricted: dict[int, set[str]]) -> bool:
    """Hold the waiting jobs of teams whose budget says so, release the others; True if any moved."""
    moved = False
    for job in waiting:
        hold = restrictions.HOLD_NEW_JOBS in restricted.get(job.team_id, set())
        if hold and job.state in WAITING:
            moved |= transition(
                job.pk, JobState.HELD, why="team budget: new jobs are held",
                reason=PendingReason.BUDGET, reason_detail="held: the team's budget stops new jobs this period",
            )  # fmt: skip
        elif not hold and job.state == JobState.HELD and job.reason == PendingReason.BUDGET:
            moved |= transition(job.pk, JobState.PENDING, why="budget hold lifted", reason=PendingReason.NEW, reason_detail="")
    return moved


def _without_cloud_for(
    admissions: list[policy.Admission], job_ids: set[int]
) -> tuple[list[policy.Admission], list[policy.Admission]]:
    """Split off admissions of these jobs onto cloud (burst) pools: their team's budget denies bursts."""
    if not job_ids:
        return admissions, []
    cloud = set(Pool.objects.filter(kind=PoolKind.CLOUD).values_list("name", flat=True))
    kept = [a for a in admissions if a.job_id in job_ids and admission.real_pool(a.pool) in cloud]
    return [a for a in admissions if a not in kept], kept


def _explain_kept_off_cloud(admissions: list[policy.Admission]) -> None:
    for admit in admissions:
        Job.objects.filter(pk=admit.job_id, state__in=WAITING).update(
            reason=PendingReason.BUDGET, reason_detail="the team's budget denies cloud bursts; waiting for on-premises GPUs"
        )


def _explain_behind_backlog(admissions: list[policy.Admission]) -> None:
    for admit in admissions:
        Job.objects.filter(pk=admit.job_id, state__in=WAITING).update(
            reason=PendingReason.CAPACITY,
            reason_detail="waits for the jobs queued on the backend ahead of it, whose class could preempt this one there",
        )


def _admit(admissions: list[policy.Admission], now: datetime, *, queued: bool = False) -> list[int]:
    admitted = []
    for admit in admissions:
        if admit.preempts:
            continue  # admitted once its victims have given their GPUs back (a later cycle)
        pool = admission.real_pool(admit.pool)  # a teams-only node's own pool is part of its grid pool
        why = f"admitted to {pool}" + (" (borrowing)" if admit.borrowing else "")
        why += " (queued on the backend until GPUs free up)" if queued else ""
        moved = transition(
            int(admit.job_id), JobState.ADMITTED, why=why,
            admitted_at=now, pool=pool, placement=dict(admit.placement), reason="", reason_detail="",
            team_position=None, pool_position=None, estimated_start=None,
        )  # fmt: skip
        if moved:
            admitted.append(int(admit.job_id))
    return admitted


def _preempt(preemptions: list[policy.Preemption]) -> None:
    for victim in preemptions:
        why = f"preempted for job #{victim.for_job}: {victim.reason}"
        if transition(int(victim.job_id), JobState.PREEMPTING, why=why):
            after_commit("jobs.tasks.preempt_on_backend", int(victim.job_id))


def _record_explanations(waiting: list[Job], explanations: policy.Explanations, admitted: set[policy.JobId]) -> None:
    """Store why each job still waits, writing only the rows whose explanation changed, in bulk (one
    statement per thousand rows, each row only while its job is still in the state read)."""
    rows = explanations.rows
    changed: list[tuple[Any, ...]] = []
    for job in waiting:
        found = rows.get(job.pk)
        if found is None or job.pk in admitted:
            continue
        reason, detail, team_position, pool_position, estimated = found
        start = datetime.fromtimestamp(estimated, tz=UTC) if estimated is not None else None
        new = (str(reason), detail[:300], team_position, pool_position, start)
        old = (job.reason, job.reason_detail, job.team_position, job.pool_position, job.estimated_start)
        if _changed(old, new):
            changed.append((job.pk, job.state, *new))
    columns = ("reason", "reason_detail", "team_position", "pool_position", "estimated_start")
    with connection.cursor() as cursor:
        for statement in bulk.update_rows(Job, columns, changed, guard="state"):
            cursor.execute(statement.text, statement.params)


def _changed(old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    """Estimates move a little every cycle; rewrite a row only when they move by a minute or more."""
    if old[:4] != new[:4]:
        return True
    before: datetime | None = old[4]
    after: datetime | None = new[4]
    if before is None or after is None:
        return before is not after
    return abs((after - before).total_seconds()) >= 60


# --- dispatch --------------------------------------------------------------------------------


# What every job finds in its environment from apps above this one (artifacts: its output and checkpoint
# locations); each registers a provider in its AppConfig.ready(), so jobs imports none of them.
JOB_ENVIRONMENT: list[Callable[[Job], dict[str, str]]] = []


def job_request(job: Job) -> JobRequest:
    return JobRequest(
        portal_job_id=job.pk,
        name=job.name,
        kind=job.kind,
        team=job.team.slug,
        user=job.owner.unix_username or job.owner.username,
        gpu_model=job.gpu_model,
        gpus_per_node=job.gpus_per_node,
        nodes=job.nodes,
        node_names=tuple(sorted(job.placement)),
        walltime_s=job.walltime_s,
        image=job.image,
        command=tuple(job.command),
        priority_class=job.priority,
        checkpoint_dir=job.checkpoint_dir,
        env={**job.env, **{k: v for provide in JOB_ENVIRONMENT for k, v in provide(job).items()}},
        script=job.script,
    )


def dispatch(job_id: int, backend: ClusterBackend | None = None) -> bool:
    """Hand one admitted job to the backend exactly once; True if it is now dispatched."""
    return job_id in dispatch_many([job_id], backend)


def dispatch_many(job_ids: list[int], backend: ClusterBackend | None = None) -> list[int]:
    """Hand admitted jobs to the backend exactly once each; returns those now dispatched.

    Looks for the jobs on the backend first, by portal id and in one listing, so a crash after a
    submit and before its record never yields a second copy. The wave's submits are recorded in
    one transaction (one commit, not one per job). A retryable backend error propagates for the
    task to retry, after the jobs submitted before it are recorded; a refusal fails that job with
    the backend's reason and the others go on.
    """
    order = {job_id: at for at, job_id in enumerate(job_ids)}
    jobs = list(Job.objects.select_related("team", "owner").filter(pk__in=job_ids, state=JobState.ADMITTED))
    if not jobs:
        return []
    jobs.sort(key=lambda job: order[job.pk])  # the admission order: a backend that queues starts them in it
    backend = backend or get_backend()
    existing = _already_submitted(jobs, backend)
    submitted: list[tuple[Job, str]] = []
    try:
        for job in jobs:
            backend_job_id = existing.get(job.pk) or _submit_or_fail(job, backend)
            if backend_job_id:
                submitted.append((job, backend_job_id))
    finally:
        dispatched = _record_dispatched(submitted, backend)
    return dispatched


def _already_submitted(jobs: list[Job], backend: ClusterBackend) -> dict[int, str]:
    """Backend jobs already made for these admitted jobs (a worker died before recording them).

    None can be older than the job's admission, so the backend may skip its archive for jobs
    admitted recently; a preempted attempt is history, and the job is submitted again.
    """
    since = {job.pk: job.admitted_at or job.submitted_at for job in jobs}
    found = backend.list_jobs_since(since)
    return {r.portal_job_id: r.backend_job_id for r in found if r.state != RemoteJobState.PREEMPTED}


def _submit_or_fail(job: Job, backend: ClusterBackend) -> str:
    """The backend's id for the submitted job, or "" when the backend refused it (the job fails with its reason)."""
    try:
        return backend.submit(job_request(job))
    except BackendError as exc:
        if exc.retryable:
            raise
        transition(
            job.pk, JobState.FAILED, why=f"backend refused: {exc}", finished_at=timezone.now(), reason_detail=str(exc)[:300]
        )
        return ""


def _record_dispatched(submitted: list[tuple[Job, str]], backend: ClusterBackend) -> list[int]:
    """Record the submitted jobs as dispatched in one transaction; cancel those cancelled meanwhile."""
    now = timezone.now()
    moves = [
        Move(job.pk, JobState.ADMITTED, JobState.DISPATCHED, f"{backend.name} job {backend_job_id}",
             {"dispatched_at": now, "backend": backend.name, "backend_job_id": backend_job_id})
        for job, backend_job_id in submitted
    ]  # fmt: skip
    with transaction.atomic():
        dispatched = _move_read(moves, now)
    for job, backend_job_id in submitted:
        if job.pk not in dispatched and Job.objects.filter(pk=job.pk, state=JobState.CANCELLED).exists():
            backend.cancel(backend_job_id)  # cancelled while we were submitting
    return [job.pk for job, _ in submitted if job.pk in dispatched]


@dataclass(frozen=True)
class Move:
    """A transition of a job from the state it was just read in (one of a batch)."""

    job_id: int
    source: str
    to: JobState
    why: str
    fields: dict[str, Any]


def _move_read(moves: list[Move], now: datetime) -> set[int]:
    """Apply transitions whose source state was just read: one conditional UPDATE each, their events in
    one INSERT (where `transition` reads, updates and inserts per job). A job that has moved on since
    it was read is left as it is (the next sync or dispatch looks again). Call inside a transaction."""
    events = []
    for move_ in moves:
        allowed = TRANSITIONS.allows(move_.source, move_.to)
        if allowed and Job.objects.filter(pk=move_.job_id, state=move_.source).update(
            state=move_.to, state_changed_at=now, **move_.fields
        ):
            events.append(
                JobEvent(job_id=move_.job_id, at=now, from_state=move_.source, to_state=move_.to, actor="system",
                         reason=move_.why[:300], pool="")
            )  # fmt: skip
            _announce(move_.job_id)
    JobEvent.objects.bulk_create(events)
    return {event.job_id for event in events}


# --- sync with the backend -------------------------------------------------------------------


@dataclass
class SyncReport:
    checked: int = 0
    changed: int = 0
    recovered: int = 0
    requeued: int = 0
    freed: int = 0  # jobs that gave their GPUs back (ended or requeued)


def sync_jobs(backend: ClusterBackend | None = None) -> SyncReport:
    """Bring portal state in line with the backend for every job that is (or may be) on it."""
    backend = backend or get_backend()
    jobs = list(
        Job.objects.filter(state__in={JobState.ADMITTED} | ON_BACKEND).only(
            "id", "state", "dispatched_at", "admitted_at", "gpus_per_node", "nodes", "placement"
        )
    )
    report = SyncReport(checked=len(jobs))
    if not jobs:
        return report
    remote = {r.portal_job_id: r for r in backend.list_jobs_since({j.pk: _submittable_since(j) for j in jobs})}
    stale_before = timezone.now() - timedelta(seconds=settings.DISPATCH_STALE_S)
    with transaction.atomic():  # one commit for every change the listing brought
        _apply_listing(jobs, remote, stale_before, backend, report)
    if report.changed or report.requeued:
        after_commit("jobs.tasks.admission_cycle")  # GPUs may have been freed: admit now, not at the next tick
    return report


EVER = datetime.min.replace(tzinfo=UTC)


def _submittable_since(job: Job) -> datetime:
    """Since when a backend job for `job` may exist: an admitted job's only since its admission; a
    dispatched job is looked for in the backend's archive too if the live listing lacks it."""
    if job.state == JobState.ADMITTED and job.admitted_at is not None:
        return job.admitted_at
    return EVER


def _apply_listing(
    jobs: list[Job], remote: dict[int, RemoteJob], stale_before: datetime, backend: ClusterBackend, report: SyncReport
) -> None:
    progressed: list[Move] = []
    for job in jobs:
        found = remote.get(job.pk)
        if job.state == JobState.ADMITTED:
            if found is not None and transition(
                job.pk, JobState.DISPATCHED, why="found on the backend by portal id",
                dispatched_at=timezone.now(), backend=backend.name, backend_job_id=found.backend_job_id,
            ):  # fmt: skip
                report.recovered += 1
                job.state = JobState.DISPATCHED
            else:
                continue
        if found is None:
            if job.dispatched_at and job.dispatched_at < stale_before and _requeue(job.pk, "the backend no longer has the job"):
                report.requeued += 1
                report.freed += 1
            continue
        progress = _progress(job, found)
        if progress is not None:
            progressed.append(progress)
            continue
        moved = _apply_remote(job, found)
        report.changed += moved
        report.freed += moved if found.state not in (RemoteJobState.PENDING, RemoteJobState.RUNNING) else 0
    moved_ids = _move_read(progressed, timezone.now())
    report.changed += len(moved_ids)
    report.freed += sum(1 for m in progressed if m.job_id in moved_ids and m.to == JobState.SUCCEEDED)


def _progress(job: Job, remote: RemoteJob) -> Move | None:
    """The common moves, batched: a dispatched job started, or a dispatched or running job completed."""
    if remote.state == RemoteJobState.RUNNING and job.state == JobState.DISPATCHED:
        return Move(
            job.pk,
            job.state,
            JobState.RUNNING,
            "started",
            {"started_at": remote.started_at or timezone.now(), **_placed(job, remote)},
        )
    if remote.state == RemoteJobState.SUCCEEDED and job.state in (JobState.DISPATCHED, JobState.RUNNING):
        fields = {"exit_code": 0, "finished_at": remote.ended_at or timezone.now(), "started_at": remote.started_at}
        return Move(job.pk, job.state, JobState.SUCCEEDED, "completed", fields)
    return None


def _placed(job: Job, remote: RemoteJob) -> dict[str, Any]:
    """The nodes the backend started the job on, where they differ from the portal's choice (Slurm
    places within the pool, and a queued job takes whichever GPUs free first): the ledger per node
    then follows where the GPUs are really held."""
    if len(remote.node_names) != job.nodes:
        return {}
    placement = dict.fromkeys(remote.node_names, job.gpus_per_node)
    return {"placement": placement} if placement != job.placement else {}


def _apply_remote(job: Job, remote: RemoteJob) -> int:
    detail = remote.reason if remote.exit_code in (None, 0) else f"{remote.reason or 'exit'} (exit code {remote.exit_code})"
    if remote.state == RemoteJobState.RUNNING and job.state == JobState.DISPATCHED:
        return int(transition(job.pk, JobState.RUNNING, why="started", started_at=remote.started_at or timezone.now()))
    ended = remote.ended_at or timezone.now()
    started = remote.started_at
    if remote.state == RemoteJobState.SUCCEEDED:
        return int(transition(job.pk, JobState.SUCCEEDED, why="completed", exit_code=0, finished_at=ended, started_at=started))
    if remote.state == RemoteJobState.FAILED:
        failed = transition(
            job.pk, JobState.FAILED, why=detail or "failed", exit_code=remote.exit_code,
            finished_at=ended, started_at=started, reason_detail=detail[:300],
        )  # fmt: skip
        return int(failed)
    if job.state == JobState.PREEMPTING and remote.state in (RemoteJobState.CANCELLED, RemoteJobState.PREEMPTED):
        return int(_requeue(job.pk, "preempted; resumes from its last checkpoint"))
    if remote.state == RemoteJobState.CANCELLED:
        return int(transition(job.pk, JobState.CANCELLED, why="cancelled on the backend", finished_at=ended, started_at=started))
    if remote.state == RemoteJobState.PREEMPTED:
        return int(_requeue(job.pk, "preempted on the backend"))
    return 0


def _requeue(job_id: int, why: str) -> bool:
    return transition(
        job_id, JobState.REQUEUED, why=why, placement={}, pool="", backend_job_id="", started_at=None,
        reason=PendingReason.NEW, reason_detail=why,
    )  # fmt: skip


FOLLOW_POLL_S = 0.05


def follow_backend(
    seconds: float, poll_s: float = FOLLOW_POLL_S, backend: ClusterBackend | None = None, until: Callable[[], bool] | None = None
) -> int:
    """Sync with the backend every `poll_s` for up to `seconds` (or until `until()` says so), and run
    an admission cycle and its dispatch as soon as a sync sees GPUs given back, instead of at the
    next tick. One backend listing per sync (for Slurm one squeue run, a few ms), so polling this
    often is cheap; the first pass admits whatever was already waiting. Returns the cycles run."""
    backend = backend or get_backend()
    deadline = time.monotonic() + seconds
    cycles, admit = 0, True
    while time.monotonic() < deadline and not (until is not None and until()):
        if sync_jobs(backend).freed or admit:
            admit_and_dispatch(backend)
            cycles += 1
        admit = False
        time.sleep(poll_s)
    return cycles


# --- reaper ----------------------------------------------------------------------------------


def stale_admitted(now: datetime | None = None) -> list[int]:
    """Admitted jobs that should have reached the backend by now (a lost task or a crash)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.DISPATCH_STALE_S)
    return list(Job.objects.filter(state=JobState.ADMITTED, admitted_at__lt=cutoff).values_list("id", flat=True))


def reap_stale() -> dict[str, int]:
    redispatch = stale_admitted()
    for job_id in redispatch:
        after_commit("jobs.tasks.dispatch_job", job_id)
    recently = timezone.now() - timedelta(hours=1)
    cancelled = list(
        Job.objects.filter(state=JobState.CANCELLED, finished_at__gte=recently)
        .exclude(backend_job_id="")
        .values_list("id", flat=True)
    )
    for job_id in cancelled:
        after_commit("jobs.tasks.cancel_on_backend", job_id)
    return {"redispatched": len(redispatch), "cancel_checked": len(cancelled)}


# --- reading ---------------------------------------------------------------------------------


def read_log(job: Job, offset: int = 0, limit: int = 500) -> list[str]:
    if not job.backend_job_id:
        return []
    try:
        return get_backend(job.backend or None).read_log(job.backend_job_id, offset, limit)
    except BackendError as exc:
        log.warning("log of job %s unavailable: %s", job.pk, exc)
        return []


def grid_figures() -> dict[str, Any]:
    """Current allocation and queue per pool and model, for the dashboard and GridSample."""
    allocated: dict[str, int] = defaultdict(int)
    running: dict[str, int] = defaultdict(int)
    for pool, gpus, state in Job.objects.filter(state__in=HOLDS_GPUS).values_list("pool", "gpus", "state"):
        allocated[pool] += gpus
        running[pool] += int(state == JobState.RUNNING)
    pending = {
        r["gpu_model"]: (r["n"], r["g"] or 0)
        for r in Job.objects.filter(state__in=WAITING).values("gpu_model").annotate(n=Count("id"), g=Sum("gpus"))
    }
    return {"allocated": dict(allocated), "running": dict(running), "pending": pending}


def record_grid_sample() -> int:
    figures = grid_figures()
    return cluster_services.record_grid_sample(figures["allocated"], figures["pending"], figures["running"])
