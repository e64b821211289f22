"""One telemetry cycle: query, attribute GPUs to jobs, run the safeguards, act on jobs, fan out.

Lives in the portal app because it spans cluster (telemetry, guard) and jobs (owners, stopping an
idle job); cluster never imports jobs. Called by the Celery task `portal.tasks.telemetry_cycle`.
Telemetry that cannot be read makes the cycle *stale*: pages are told, and nothing is decided.

At a thousand nodes the cycle asks Prometheus only for the recorded per-GPU series the portal reads
(cluster.telemetry), decides on plain rows, writes only the guard memories that changed and every
running job's efficiency sums in one statement (cluster.guard), and builds and sends a message only
for the groups somebody listens to (portal.listeners).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing import tasks as billing_tasks
from cluster import guard
from cluster import services as cluster_services
from cluster.models import EfficiencyCursor, JobEfficiency, Node, SafeguardKind
from cluster.safeguards import Action, IdleAction, IdlePolicy, IdleVerdict, parse_team_actions
from cluster.simulator.model import GpuSample
from cluster.telemetry import TelemetrySource, TelemetryUnavailable, get_telemetry
from cluster.telemetry.convert import Attribution, pod_pattern, portal_hpc_job, present
from cluster.telemetry.prometheus import PrometheusTelemetry
from cluster.telemetry.summaries import CycleView, view_of_samples
from jobs import services as job_services
from jobs import tasks as job_tasks
from jobs.models import Job
from jobs.states import HOLDS_GPUS, TERMINAL, JobState
from portal import listeners
from portal.models import User
from portal.queue import after_commit

log = logging.getLogger(__name__)

# (GpuSample attribute, short key in the compact messages)
FIELDS = (("temperature_c", "temp"), ("utilization", "util"), ("fb_used_mib", "mem"), ("power_w", "power"))
JOB_METRICS = ("utilization", "temperature_c", "fb_used_mib")


@dataclass(frozen=True)
class HeldJob:
    """A job holding GPUs, as the cycle needs it."""

    id: int
    state: str
    team: str
    owner_id: int
    placement: dict[str, int]
    gpus: int
    pool: str
    backend_job_id: str
    started_at: datetime | None = None


@dataclass
class CycleReport:
    stale: bool = False
    gpus: int = 0
    guarded: list[guard.GuardOutcome] = field(default_factory=list)
    idle: list[guard.IdleOutcome] = field(default_factory=list)
    finalised: int = 0
    groups: int = 0
    unresolved: dict[str, int] = field(default_factory=dict)  # host names that named no node -> series
    timings_ms: dict[str, float] = field(default_factory=dict)


def held_jobs() -> list[HeldJob]:
    rows = Job.objects.filter(state__in=HOLDS_GPUS).values_list(
        "id", "state", "team__slug", "owner_id", "placement", "gpus", "pool", "backend_job_id", "started_at"
    )
    return [HeldJob(*row) for row in rows]


class WholeNodeClaims(Mapping[tuple[str, int | None], int]):
    """(node, None) -> the job holding every GPU of that node: the allocation record's claim on a
    node whose exporter labels no GPU with its job. The record says how many GPUs of a node a job
    holds, not which: a job holding part of a node claims nothing (crediting it with the node's free
    GPUs would water its utilisation down). Node sizes are read only when an unlabelled node is met."""

    def __init__(self, held: dict[str, tuple[int, int]]) -> None:
        self.held = held  # node -> (its one job, GPUs that job holds there)

    @cached_property
    def claims(self) -> dict[tuple[str, int | None], int]:
        sizes = dict(Node.objects.values_list("name", "gpus"))
        return {(node, None): job for node, (job, gpus) in self.held.items() if sizes.get(node) == gpus}

    def __getitem__(self, key: tuple[str, int | None]) -> int:
        if key[1] is not None or key[0] not in self.held:
            raise KeyError(key)
        return self.claims[key]

    def __iter__(self) -> Iterator[tuple[str, int | None]]:
        return iter(self.claims)

    def __len__(self) -> int:
        return len(self.claims)


def attribution(jobs: list[HeldJob], started_by: datetime | None = None) -> Attribution:
    """Labels first; when they say nothing, the portal's allocation record for nodes wholly held by one
    job (WholeNodeClaims). `started_by`: for sums over a window from then on, only jobs already
    running then claim a node (a node's readings before its job started are not that job's)."""
    by_node: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for job in jobs:
        claims = started_by is None or (job.started_at is not None and job.started_at <= started_by)
        for node, gpus in job.placement.items():
            by_node[node].append((job.id, gpus if claims else -1))
    held = {node: held[0] for node, held in by_node.items() if len(held) == 1 and held[0][1] > 0}
    allocation = WholeNodeClaims(held)
    hpc = portal_hpc_job
    if settings.TELEMETRY_HPC_JOB_ID == "backend":
        by_backend = {j.backend_job_id: j.id for j in jobs if j.backend_job_id}
        hpc = lambda value: by_backend.get(value)  # noqa: E731
    return Attribution(hpc, pod_pattern(settings.TELEMETRY_POD_JOB_PATTERN), allocation)


def source_for(jobs: list[HeldJob]) -> TelemetrySource:
    source = get_telemetry()
    if isinstance(source, PrometheusTelemetry):
        return source.with_attribution(attribution(jobs))
    return source


def idle_policy(team: str) -> IdlePolicy:
    return idle_policies([team])[team]


def idle_policies(teams: Iterable[str]) -> dict[str, IdlePolicy]:
    """Each team's idle policy, the settings parsed once for all of them."""
    actions = parse_team_actions(settings.IDLE_TEAM_ACTIONS)
    default = IdleAction(settings.IDLE_ACTION)
    times = (settings.IDLE_THRESHOLD, settings.IDLE_WARN_AFTER_S, settings.IDLE_ACT_AFTER_S)
    return {team: IdlePolicy(*times, actions.get(team, default)) for team in set(teams)}


# --- the cycle ------------------------------------------------------------------------------------


def read_view(source: TelemetrySource, now: datetime) -> CycleView:
    """What this cycle decides from: Prometheus' recorded summaries, or (any other source) every GPU's sample."""
    if isinstance(source, PrometheusTelemetry):
        return source.cycle_view(settings.IDLE_THRESHOLD, now)
    return view_of_samples(source.samples(None, now), settings.IDLE_THRESHOLD)


def run_cycle(source: TelemetrySource | None = None, now: datetime | None = None) -> CycleReport:
    now = now or timezone.now()
    report = CycleReport()
    clock = _Stopwatch(report)
    jobs = held_jobs()
    source = source or source_for(jobs)
    try:
        view = read_view(source, now)
    except TelemetryUnavailable as exc:
        log.warning("telemetry cycle stale: %s", exc)
        report.stale = True
        stale = stale_messages(jobs, now, str(exc))
        report.groups = fan_out(stale, listeners.listened(g for g, _ in stale))
        return report
    clock.lap("query")
    report.gpus = view.gpus
    if isinstance(source, PrometheusTelemetry) and (unresolved := source.hosts.take_unresolved()):
        report.unresolved = unresolved
        log.warning("telemetry names hosts that are no node: %s (left out)", ", ".join(sorted(unresolved)[:10]))
        cluster_services.record_unresolved(unresolved, now)
    with transaction.atomic():
        report.guarded = guard.guard_nodes(view.guard, now) if settings.GUARD_ENABLED else []
        _tell_owners_of_guarded_nodes(report.guarded, jobs)
        clock.lap("guard")
        running = [j for j in jobs if j.state == JobState.RUNNING]
        policies = idle_policies(j.team for j in running)
        changes, report.idle = guard.decide_jobs(
            view.jobs, view.tallies, {j.id: j.gpus for j in running}, {j.id: policies[j.team] for j in running}, now
        )
        clock.lap("idle")
        guard.write_efficiency(changes, now)
        clock.lap("writes")
        _act_on_idle(report.idle, {j.id: j for j in running})
        finalised = guard.finalise(_ended(view))
        report.finalised = len(finalised)
        if finalised:  # their usage records take the final busy share (billing's allocated vs used GPU-hours)
            after_commit(billing_tasks.meter_jobs, finalised)
    clock.lap("finalise")
    samples = view.samples
    if samples is None and settings.TELEMETRY_PUSH:
        samples = _every_gpu(source, now)
    if samples is not None:
        by_job = samples_by_job(samples, {j.id for j in jobs})
        report.groups = fan_out(*live_messages_for_listeners(samples, by_job, jobs, now, source))
    clock.lap("fan_out")
    return report


def _ended(view: CycleView) -> list[int]:
    """The jobs whose efficiency summary may be fixed now: with sums from history (no tallies in the
    view), those whose end the accounting pass has covered."""
    if view.tallies is not None:
        return ended_job_ids()
    until = accounted_until()
    return ended_job_ids(until) if until is not None else []


def _every_gpu(source: TelemetrySource, now: datetime) -> list[GpuSample] | None:
    """Every GPU's sample, for pages that wait for pushes (TELEMETRY_PUSH) when the view had none."""
    try:
        return source.samples(None, now)
    except TelemetryUnavailable as exc:
        log.warning("live pages get nothing this cycle: %s", exc)
        return None


# --- efficiency from Prometheus' history ------------------------------------------------------------

CURSOR = "summaries"


@dataclass
class AccountingReport:
    skipped: str = ""
    start: datetime | None = None
    end: datetime | None = None
    jobs: int = 0


def accounted_until() -> datetime | None:
    return EfficiencyCursor.objects.filter(name=CURSOR).values_list("until", flat=True).first()


def account_efficiency(source: TelemetrySource | None = None, now: datetime | None = None) -> AccountingReport:
    """Add to every job's efficiency row what Prometheus recorded since the last pass (the recorded
    summaries, one per rule evaluation), in windows of at most ACCOUNTING_WINDOW, and move the
    cursor in the same transaction: a crash adds nothing, the next pass adds it all, once.

    Only for Prometheus: other sources bring their sums with every cycle (CycleView.tallies).
    """
    now = now or timezone.now()
    source = source or get_telemetry()
    if not isinstance(source, PrometheusTelemetry):
        return AccountingReport(skipped="the telemetry source keeps no history: each cycle adds its own sums")
    # Leave the last evaluations out: a summary stamped before `end` may not be written yet.
    end = (now - timedelta(seconds=2 * settings.TELEMETRY_SCRAPE_INTERVAL_S + 1)).replace(microsecond=0)
    report = AccountingReport(end=end)
    with transaction.atomic():
        cursor, _ = EfficiencyCursor.objects.select_for_update().get_or_create(
            name=CURSOR, defaults={"until": end - timedelta(seconds=settings.TELEMETRY_ACCOUNTING_S)}
        )
        start = report.start = cursor.until
        if end - start > ACCOUNTING_CATCH_UP:
            log.warning("efficiency accounting: %s behind, adding the last %s only", end - start, ACCOUNTING_CATCH_UP)
            start = end - ACCOUNTING_CATCH_UP
        jobs = held_jobs()
        while start < end:
            stop = min(end, start + ACCOUNTING_WINDOW)
            windowed = source.with_attribution(attribution(jobs, started_by=start))
            tallies = windowed.tallies(settings.IDLE_THRESHOLD, start, stop)
            known = set(Job.objects.filter(pk__in=list(tallies)).values_list("pk", flat=True))
            report.jobs += guard.add_tallies({j: t for j, t in tallies.items() if j in known}, now)
            start = stop
        if end > cursor.until:
            cursor.until = end
            cursor.save(update_fields=["until"])
    return report


ACCOUNTING_WINDOW = timedelta(hours=1)
ACCOUNTING_CATCH_UP = timedelta(days=1)


class _Stopwatch:
    def __init__(self, report: CycleReport) -> None:
        self.report, self.last = report, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.report.timings_ms[name] = round((now - self.last) * 1000, 1)
        self.last = now


def samples_by_job(samples: Iterable[GpuSample], job_ids: set[int]) -> dict[int, list[GpuSample]]:
    out: dict[int, list[GpuSample]] = defaultdict(list)
    for s in samples:
        if s.portal_job_id in job_ids:
            out[s.portal_job_id].append(s)
    return out


def ended_job_ids(accounted_until: datetime | None = None) -> list[int]:
    """Jobs whose efficiency row is still open though they ended; with `accounted_until`, only those
    that ended before it (their last sums are in)."""
    open_ids = JobEfficiency.objects.filter(final=False).values("portal_job_id")
    ended = Job.objects.filter(pk__in=open_ids, state__in=TERMINAL)
    if accounted_until is not None:
        ended = ended.filter(Q(finished_at__lte=accounted_until) | Q(finished_at__isnull=True))
    return list(ended.values_list("id", flat=True))


def _tell_owners_of_guarded_nodes(outcomes: list[guard.GuardOutcome], jobs: list[HeldJob]) -> None:
    for outcome in (o for o in outcomes if o.action == Action.CORDON):
        owners = {j.owner_id for j in jobs if outcome.node in j.placement}
        if owners:
            subject = f"[grid] node {outcome.node}, where your job runs, was taken out of service"
            guard.notify(User.objects.filter(pk__in=owners), subject, outcome.reason)


def _act_on_idle(outcomes: list[guard.IdleOutcome], jobs: dict[int, HeldJob]) -> None:
    for outcome in outcomes:
        job = jobs[outcome.portal_job_id]
        minutes = round(outcome.idle_for_s / 60)
        owner = User.objects.filter(pk=job.owner_id)
        if outcome.verdict == IdleVerdict.WARN:
            then = idle_policy(job.team).action
            text = f"GPUs idle for {minutes} min; next: {then.value} unless they become busy"
            guard.record_idle(job.id, SafeguardKind.IDLE_WARNING, text)
            guard.notify(owner, f"[grid] job #{job.id}: its GPUs are idle", text)
        elif outcome.verdict == IdleVerdict.STOP:
            _stop_idle_job(job, minutes)
        elif outcome.verdict == IdleVerdict.RECLAIMABLE:
            guard.record_idle(job.id, SafeguardKind.IDLE_RECLAIMABLE, f"GPUs idle for {minutes} min: GPUs may be reclaimed")
            guard.notify(owner, f"[grid] job #{job.id} marked reclaimable", "its GPUs stayed idle after the warning")
        else:
            guard.record_idle(job.id, SafeguardKind.IDLE_CLEARED, "GPUs busy again")


def _stop_idle_job(job: HeldJob, minutes: int) -> None:
    why = f"stopped by the idle policy: GPUs idle for {minutes} min after a warning"
    moved = job_services.transition(
        job.id, JobState.CANCELLED, actor=guard.IDLE_ACTOR, why=why, finished_at=timezone.now(), reason_detail=""
    )
    if moved:
        after_commit(job_tasks.cancel_on_backend, job.id)
        guard.record_idle(job.id, SafeguardKind.IDLE_STOPPED, why)


# --- messages -------------------------------------------------------------------------------------


Message = tuple[str, dict[str, Any]]


def _value(sample: GpuSample, attr: str) -> float | None:
    value = present(getattr(sample, attr))
    return round(value, 1) if value is not None else None


def heat(samples: Iterable[GpuSample]) -> dict[str, Any]:
    """Per node (sorted), per GPU index: temperature and utilisation; None where a GPU did not report."""
    by_node: dict[str, dict[int, GpuSample]] = defaultdict(dict)
    for s in samples:
        by_node[s.hostname][s.gpu] = s
    nodes = sorted(by_node)
    width = max((max(g) + 1 for g in by_node.values()), default=0)
    grid: dict[str, Any] = {"nodes": nodes, "gpus": width}
    for attr, key in FIELDS[:2]:
        grid[key] = [[_value(by_node[n][g], attr) if g in by_node[n] else None for g in range(width)] for n in nodes]
    return grid


def job_values(samples: list[GpuSample]) -> dict[str, dict[str, float | None]]:
    return {m: {f"{s.hostname}/gpu{s.gpu}": _value(s, m) for s in samples} for m in JOB_METRICS}


class _Everyone:
    """Every group listens (the default of `live_messages`: all the messages a cycle could send)."""

    def __contains__(self, group: object) -> bool:
        return True


EVERYONE: Container[str] = _Everyone()


def live_messages(
    samples: list[GpuSample],
    by_job: dict[int, list[GpuSample]],
    jobs: list[HeldJob],
    now: datetime,
    heard: Container[str] = EVERYONE,
    pools: dict[str, str] | None = None,
    node_samples: list[GpuSample] | None = None,
) -> list[Message]:
    """The cycle's messages for the groups in `heard`; nothing is built for a group that is not.

    `node_samples`: what the node pages show, when read apart from `samples` (with power).
    """
    at = now.isoformat()
    messages: list[Message] = []
    if "grid" in heard:
        messages.append(("grid", {"type": "telemetry.grid", "at": at, "stale": False, "heat": heat(samples)}))
    by_node = _by_node(samples)
    pools = dict(Node.objects.values_list("name", "pool__name")) if pools is None else pools
    by_pool: dict[str, list[GpuSample]] = defaultdict(list)
    for node, gpus in _by_node(samples if node_samples is None else node_samples).items():
        if f"telemetry.node.{node}" in heard:
            rows = [[s.gpu, *(_value(s, attr) for attr, _ in FIELDS)] for s in gpus]
            messages.append((f"telemetry.node.{node}", {"type": "telemetry.node", "at": at, "node": node, "gpus": rows}))
    for node, gpus in by_node.items():
        pool = pools.get(node, "")
        if pool and f"telemetry.pool.{pool}" in heard:
            by_pool[pool].extend(gpus)
    for pool, pool_samples in by_pool.items():
        messages.append(
            (f"telemetry.pool.{pool}", {"type": "telemetry.pool", "at": at, "pool": pool, **_pool_figures(pool_samples)})
        )
    for job_id, job_samples in by_job.items():
        if f"job.{job_id}" in heard:
            values = job_values(job_samples)
            messages.append((f"job.{job_id}", {"type": "telemetry.job", "t": at, "stale": False, "values": values}))
    return messages


def _by_node(samples: Iterable[GpuSample]) -> dict[str, list[GpuSample]]:
    by_node: dict[str, list[GpuSample]] = defaultdict(list)
    for s in samples:
        by_node[s.hostname].append(s)
    return by_node


def live_messages_for_listeners(
    samples: list[GpuSample],
    by_job: dict[int, list[GpuSample]],
    jobs: list[HeldJob],
    now: datetime,
    source: TelemetrySource | None = None,
) -> tuple[list[Message], set[str]]:
    """The messages for the groups that have a listener now (one cache read for all), and those groups.

    The grid's samples may lack what only node pages show (power, from the recorded series): the
    nodes whose page is open are read again whole from `source`, a small query for a few nodes.
    """
    pools = dict(Node.objects.values_list("name", "pool__name"))
    groups = {"grid", *(f"telemetry.node.{s.hostname}" for s in samples), *(f"telemetry.pool.{p}" for p in pools.values())}
    groups.update(f"job.{job_id}" for job_id in by_job)
    heard = listeners.listened(groups)
    watched = {s.hostname for s in samples if f"telemetry.node.{s.hostname}" in heard}
    node_samples = [s for s in samples if s.hostname in watched]
    if watched and source is not None:
        try:
            node_samples = source.samples(sorted(watched), now)
        except TelemetryUnavailable as exc:
            log.warning("node pages get the grid's samples (no power): %s", exc)
    return live_messages(samples, by_job, jobs, now, heard, pools, node_samples), heard


def _pool_figures(samples: list[GpuSample]) -> dict[str, float | None]:
    utils = [u for u in (present(s.utilization) for s in samples) if u is not None]
    temps = [t for t in (present(s.temperature_c) for s in samples) if t is not None]
    return {
        "utilization": round(sum(utils) / len(utils), 1) if utils else None,
        "max_temperature": max(temps) if temps else None,
    }


def stale_messages(jobs: list[HeldJob], now: datetime, why: str) -> list[Message]:
    message = {"at": now.isoformat(), "stale": True, "why": why[:200]}
    grid: Message = ("grid", {"type": "telemetry.grid", **message})
    return [grid, *((f"job.{j.id}", {"type": "telemetry.job", "t": message["at"], **message}) for j in jobs)]


# Sends in flight at once. channels_redis's pool holds 100 connections and fails (rather than waits)
# beyond that, so a grid of 1,000 nodes (1,000+ groups a cycle) must not send them all at once.
FAN_OUT_CONCURRENCY = 50


def fan_out(messages: list[Message], heard: Container[str] = EVERYONE) -> int:
    """Send the messages to the groups in `heard` (see portal.listeners), at most FAN_OUT_CONCURRENCY
    at a time rather than one round trip per group; returns the number sent."""
    layer = get_channel_layer()
    messages = [(group, message) for group, message in messages if group in heard]
    if layer is None or not messages:
        return 0

    async def send_all() -> None:
        slots = asyncio.Semaphore(FAN_OUT_CONCURRENCY)

        async def send(group: str, message: dict[str, Any]) -> None:
            async with slots:
                await layer.group_send(group, message)

        await asyncio.gather(*(send(group, message) for group, message in messages))

    async_to_sync(send_all)()
    return len(messages)
