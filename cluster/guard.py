"""The safeguards' write path: runs the pure rules of cluster.safeguards over one telemetry cycle.

Thermal/XID guard: cordons (optionally drains) a node through cluster.services with the actor
`thermal-guard`, uncordons it after the hysteresis window, records every step in SafeguardEvent,
and tells operators. Operators override a guard cordon with `override`, which resumes the node
and keeps the guard from cordoning it again for GUARD_OVERRIDE_S.

Idle and efficiency: per running portal job, the idle streak and the efficiency sums live in
JobEfficiency; this module decides, the jobs side (grid.telemetry) acts on jobs and owners.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.utils import timezone

from cluster import services
from cluster.models import GuardState, JobEfficiency, Node, SafeguardEvent, SafeguardKind
from cluster.safeguards import (
    Action,
    EfficiencyTally,
    GuardMemory,
    IdleMemory,
    IdlePolicy,
    IdleVerdict,
    NodeReading,
    Seen,
    ThermalLimits,
    Trip,
    evaluate_node,
    evaluate_seen,
    limits_for,
    parse_thermal,
    summarise,
    thermal_floor,
)
from cluster.simulator.model import GpuSample
from cluster.states import NodeState
from cluster.telemetry.convert import GuardView, present
from cluster.telemetry.summaries import JobSeen
from portal.access import operators
from portal.models import User

log = logging.getLogger(__name__)
GUARD_ACTOR = "thermal-guard"
IDLE_ACTOR = "idle-guard"


class GuardError(Exception):
    """An override or other guard action was refused; the message says why."""


# --- readings -------------------------------------------------------------------------------------


def node_readings(samples: Iterable[GpuSample], nodes: Mapping[str, int]) -> dict[str, NodeReading | None]:
    """Per node the guard watches (name -> GPU count): its reading, or None when nothing reported."""
    temps: dict[str, dict[int, float]] = defaultdict(dict)
    xids: dict[str, dict[int, int]] = defaultdict(dict)
    for s in samples:
        if s.hostname in nodes and present(s.temperature_c) is not None:
            temps[s.hostname][s.gpu] = s.temperature_c
            xids[s.hostname][s.gpu] = s.xid_errors
    return {name: NodeReading(temps[name], xids[name], gpus) if name in temps else None for name, gpus in nodes.items()}


def view_readings(view: GuardView, nodes: Mapping[str, int]) -> dict[str, NodeReading | None]:
    """`node_readings` from a filtered answer: the GPUs below the floor that reported are `cool`.

    The same readings decide the same way (tests/telemetry/test_guard_filter.py): a node that
    reported nothing fresh has None, as a node whose GPUs are stale has in `node_readings`.
    """
    out: dict[str, NodeReading | None] = {}
    for name, gpus in nodes.items():
        reporting = view.reporting.get(name, 0)
        if not reporting:
            out[name] = None
            continue
        hot = dict(view.hot.get(name, {}))
        out[name] = NodeReading(hot, dict(view.xid.get(name, {})), gpus, cool=max(reporting - len(hot), 0))
    return out


def floor_c() -> float:
    """The temperature below which a GPU's value decides nothing (the lowest clear threshold)."""
    return thermal_floor(thermal_table())


def thermal_table() -> dict[str, ThermalLimits]:
    return parse_thermal(
        settings.GUARD_THERMAL_C, settings.GUARD_THERMAL_MODELS, settings.GUARD_HOT_WINDOW_S, settings.GUARD_COOL_WINDOW_S
    )


# --- thermal / XID --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardOutcome:
    node: str
    action: Action
    reason: str


def guard_nodes(samples: list[GpuSample] | GuardView, now: datetime | None = None) -> list[GuardOutcome]:
    """One cycle of the thermal/XID guard over every node the portal knows, from every GPU's sample
    or from the filtered answer (`GuardView`, asked with `floor_c()`): the same decisions."""
    now = now or timezone.now()
    nodes = {n.name: n for n in Node.objects.only("name", "gpus", "gpu_model", "state")}
    gpus = {name: n.gpus for name, n in nodes.items()}
    if isinstance(samples, GuardView) and samples.floor_c > floor_c():
        raise ValueError(f"guard view asked above {samples.floor_c:g} °C: the guard's floor is {floor_c():g} °C")
    readings = view_readings(samples, gpus) if isinstance(samples, GuardView) else node_readings(samples, gpus)
    # Every memory (one row per node the guard has seen): cheaper than naming a thousand nodes in an IN list.
    states = {g.node: g for g in GuardState.objects.all()}
    table = thermal_table()
    outcomes, changed = [], []
    for name, node in nodes.items():
        state = states.get(name) or GuardState(node=name)
        limits = limits_for(node.gpu_model, table, table[""])
        if _quiet(state, readings[name], limits):
            continue
        outcome, moved = _guard_one(node, state, readings[name], limits, now)
        if moved:
            changed.append(state)
        if outcome is not None:
            outcomes.append(outcome)
    _save_states(changed)
    return outcomes


def _quiet(state: GuardState, reading: NodeReading | None, limits: ThermalLimits) -> bool:
    """Nothing to do or remember: a node the guard holds no memory of, neither hot nor in error.
    (evaluate_node would keep its empty memory and decide nothing; most nodes, most cycles.)"""
    if state.pk is None or state.trip or state.hot_since is not None or state.cool_since is not None:
        return False
    if reading is None:
        return True
    if any(reading.xid.values()):
        return False
    hottest = reading.hottest()
    return hottest is None or hottest[1] <= limits.cordon_c


def _save_states(states: list[GuardState]) -> None:
    """Write the guard memories that changed this cycle in two statements, not one per node."""
    fields = ["trip", "reason", "hot_since", "cool_since", "updated_at"]
    GuardState.objects.bulk_create([s for s in states if s.pk is None], batch_size=500)
    GuardState.objects.bulk_update([s for s in states if s.pk is not None], fields, batch_size=500)


def _memory(state: GuardState) -> GuardMemory:
    return GuardMemory(
        trip=Trip(state.trip), hot_since=_ts(state.hot_since), cool_since=_ts(state.cool_since), reason=state.reason
    )


def _ts(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _guard_one(
    node: Node, state: GuardState, reading: NodeReading | None, limits: ThermalLimits, now: datetime
) -> tuple[GuardOutcome | None, bool]:
    """The node's verdict, and whether its guard memory changed (the caller saves all of them at once)."""
    before = _memory(state)
    if before.trip != Trip.NONE and node.state == NodeState.READY:
        before = GuardMemory()  # an operator resumed the node by hand: the guard lets go of it
    suppressed = state.override_until is not None and state.override_until > now
    memory, verdict = evaluate_node(before, reading, limits, now.timestamp(), suppressed=suppressed)
    if verdict.action == Action.UNCORDON and node.state != NodeState.CORDONED:
        verdict = type(verdict)(Action.NONE)  # someone else changed the node meanwhile: leave it to them
    moved = memory != _memory(state) or state.pk is None
    if moved:
        _remember(state, memory, now)
    if verdict.action == Action.NONE:
        return None, moved
    _act(node, verdict.action, verdict.reason)
    return GuardOutcome(node.name, verdict.action, verdict.reason), moved


def _remember(state: GuardState, memory: GuardMemory, now: datetime) -> None:
    state.trip, state.reason = memory.trip.value, memory.reason
    state.hot_since, state.cool_since = _dt(memory.hot_since), _dt(memory.cool_since)
    state.updated_at = now


def _act(node: Node, action: Action, reason: str) -> None:
    try:
        if action == Action.CORDON:
            drain = settings.GUARD_DRAIN
            (services.drain if drain else services.cordon)(node.name, GUARD_ACTOR, reason)
            kind = SafeguardKind.DRAIN if drain else SafeguardKind.CORDON
        else:
            services.resume(node.name, GUARD_ACTOR, reason)
            kind = SafeguardKind.UNCORDON
    except services.NodeActionError as exc:
        log.warning("thermal guard could not %s %s: %s", action.value, node.name, exc)
        return
    SafeguardEvent.objects.create(kind=kind, node=node.name, actor=GUARD_ACTOR, reason=reason[:255])
    notify(operators(), f"[grid] {node.name} {kind.label.lower()} by the thermal guard", reason)


def override(node_name: str, actor: User, reason: str, hold_s: float | None = None) -> GuardState:
    """An operator takes a node back from the guard: resume it and keep the guard off it for a while."""
    if not (actor.is_operator or actor.is_superuser):
        raise GuardError("only operators may override the thermal guard")
    if not reason.strip():
        raise GuardError("reason: an override needs a reason")
    node = Node.objects.filter(name=node_name).first()
    if node is None:
        raise GuardError(f"no node called {node_name!r}")
    until = timezone.now() + timedelta(seconds=hold_s if hold_s is not None else settings.GUARD_OVERRIDE_S)
    with transaction.atomic():
        state, _ = GuardState.objects.select_for_update().get_or_create(node=node_name)
        state.trip, state.reason, state.hot_since, state.cool_since = "", "", None, None
        state.override_until, state.override_by = until, actor.username
        state.save()
        SafeguardEvent.objects.create(
            kind=SafeguardKind.OVERRIDE,
            node=node_name,
            actor=actor.username,
            reason=f"{reason.strip()} (until {until:%Y-%m-%d %H:%M} UTC)"[:255],
        )
    if node.state != NodeState.READY:
        try:
            services.resume(node_name, actor.username, f"override: {reason.strip()}"[:255])
        except services.NodeActionError as exc:
            raise GuardError(str(exc)) from exc
    return state


# --- idle and efficiency --------------------------------------------------------------------------


@dataclass(frozen=True)
class IdleOutcome:
    portal_job_id: int
    verdict: IdleVerdict
    idle_for_s: float


@dataclass(frozen=True)
class EfficiencyChange:
    """A job's new idle memory and this cycle's sums, to add to its efficiency row (`new`: no row yet)."""

    job_id: int
    memory: IdleMemory
    added: EfficiencyTally
    new: bool = False


def decide_jobs(
    seen: Mapping[int, JobSeen],
    tallies: Mapping[int, EfficiencyTally] | None,
    gpus_by_job: Mapping[int, int],
    policies: Mapping[int, IdlePolicy],
    now: datetime,
) -> tuple[list[EfficiencyChange], list[IdleOutcome]]:
    """Idle verdicts (and, when the view brought them, this cycle's efficiency sums) of the running
    jobs, from their idle memories (one query).

    Only the jobs whose row must change are returned: new sums to add, a new idle memory, or no row
    yet. A job not seen this cycle (its GPUs unseen or stale) adds nothing and, since a gap ends
    its idle streak, changes only if it had a streak to end.
    """
    # The open rows (running jobs, and ended ones not yet final): no IN list of every running job.
    rows = JobEfficiency.objects.filter(final=False).values_list("portal_job_id", "idle_since", "warned_at", "idle_decision")
    memories = {job_id: IdleMemory(_ts(since), _ts(warned), decision) for job_id, since, warned, decision in rows}
    outcomes, changes = [], []
    nothing = EfficiencyTally()
    for job_id, gpus in gpus_by_job.items():
        before = memories.get(job_id)
        how = seen[job_id].seen(gpus) if job_id in seen else Seen.GAP
        memory, verdict = evaluate_seen(before or IdleMemory(), how, policies[job_id], now.timestamp())
        added = tallies.get(job_id, nothing) if tallies is not None else nothing
        if before is None:
            changes.append(EfficiencyChange(job_id, memory, added, new=True))
        elif memory != before or added.samples > 0:
            changes.append(EfficiencyChange(job_id, memory, added))
        if verdict != IdleVerdict.NONE:
            idle_for = (now.timestamp() - memory.idle_since) if memory.idle_since else 0.0
            outcomes.append(IdleOutcome(job_id, verdict, idle_for))
    return changes, outcomes


def write_efficiency(changes: list[EfficiencyChange], now: datetime) -> None:
    """Create the new rows in one statement and add to the others in one more (PostgreSQL)."""
    created = [c for c in changes if c.new]
    changed = [c for c in changes if not c.new]
    JobEfficiency.objects.bulk_create(
        [
            JobEfficiency(
                portal_job_id=c.job_id,
                samples=c.added.samples,
                utilization_sum=c.added.utilization_sum,
                idle_samples=c.added.idle_samples,
                memory_peak_mib=c.added.memory_peak_mib,
                idle_since=_dt(c.memory.idle_since),
                warned_at=_dt(c.memory.warned_at),
                idle_decision=c.memory.decision,
                updated_at=now,
            )
            for c in created
        ],
        ignore_conflicts=True,
    )
    if not changed:
        return
    if connection.vendor == "postgresql":
        _add_on_postgresql(changed, now)
        return
    rows = {e.portal_job_id: e for e in JobEfficiency.objects.filter(portal_job_id__in=[c.job_id for c in changed])}
    for c in changed:
        row = rows[c.job_id]
        t = _sum(EfficiencyTally(row.samples, row.utilization_sum, row.idle_samples, row.memory_peak_mib), c.added)
        row.samples, row.utilization_sum, row.idle_samples, row.memory_peak_mib = astuple(t)
        row.idle_since, row.warned_at, row.idle_decision = _dt(c.memory.idle_since), _dt(c.memory.warned_at), c.memory.decision
        row.updated_at = now
    JobEfficiency.objects.bulk_update(list(rows.values()), FIELDS, batch_size=500)


def _sum(a: EfficiencyTally, b: EfficiencyTally) -> EfficiencyTally:
    return EfficiencyTally(
        a.samples + b.samples,
        a.utilization_sum + b.utilization_sum,
        a.idle_samples + b.idle_samples,
        max(a.memory_peak_mib, b.memory_peak_mib),
    )


_ADD_SQL = """
UPDATE {table} AS e SET
    samples = e.samples + v.samples,
    utilization_sum = e.utilization_sum + v.utilization_sum,
    idle_samples = e.idle_samples + v.idle_samples,
    memory_peak_mib = GREATEST(e.memory_peak_mib, v.memory_peak_mib),
    idle_since = v.idle_since, warned_at = v.warned_at, idle_decision = v.idle_decision, updated_at = %s
FROM unnest(%s::bigint[], %s::integer[], %s::double precision[], %s::integer[], %s::double precision[],
            %s::timestamptz[], %s::timestamptz[], %s::text[])
    AS v(portal_job_id, samples, utilization_sum, idle_samples, memory_peak_mib, idle_since, warned_at, idle_decision)
WHERE e.portal_job_id = v.portal_job_id
"""


def _add_on_postgresql(changed: list[EfficiencyChange], now: datetime) -> None:
    """One statement for every changed row: the sums added by the database, the idle memory set."""
    columns = (
        [c.job_id for c in changed],
        [c.added.samples for c in changed],
        [c.added.utilization_sum for c in changed],
        [c.added.idle_samples for c in changed],
        [c.added.memory_peak_mib for c in changed],
        [_dt(c.memory.idle_since) for c in changed],
        [_dt(c.memory.warned_at) for c in changed],
        [c.memory.decision for c in changed],
    )
    with connection.cursor() as cursor:
        cursor.execute(_ADD_SQL.format(table=JobEfficiency._meta.db_table), [now, *columns])


FIELDS = [
    "samples",
    "utilization_sum",
    "idle_samples",
    "memory_peak_mib",
    "idle_since",
    "warned_at",
    "idle_decision",
    "updated_at",
]


_UPSERT_SQL = """
INSERT INTO {table} AS e (portal_job_id, samples, utilization_sum, idle_samples, memory_peak_mib, idle_decision, final, updated_at)
SELECT v.portal_job_id, v.samples, v.utilization_sum, v.idle_samples, v.memory_peak_mib, '', false, %s
FROM unnest(%s::bigint[], %s::integer[], %s::double precision[], %s::integer[], %s::double precision[])
    AS v(portal_job_id, samples, utilization_sum, idle_samples, memory_peak_mib)
ON CONFLICT (portal_job_id) DO UPDATE SET
    samples = e.samples + EXCLUDED.samples,
    utilization_sum = e.utilization_sum + EXCLUDED.utilization_sum,
    idle_samples = e.idle_samples + EXCLUDED.idle_samples,
    memory_peak_mib = GREATEST(e.memory_peak_mib, EXCLUDED.memory_peak_mib),
    updated_at = EXCLUDED.updated_at
WHERE NOT e.final
"""


def add_tallies(tallies: Mapping[int, EfficiencyTally], now: datetime) -> int:
    """Add a window's sums (the accounting pass) to the jobs' efficiency rows, creating missing rows;
    a row already made final is left as it is. The idle memories are not touched. Returns the jobs."""
    jobs = sorted(job for job, t in tallies.items() if t.samples > 0)
    if not jobs:
        return 0
    if connection.vendor == "postgresql":
        columns = (
            jobs,
            [tallies[j].samples for j in jobs],
            [tallies[j].utilization_sum for j in jobs],
            [tallies[j].idle_samples for j in jobs],
            [tallies[j].memory_peak_mib for j in jobs],
        )
        with connection.cursor() as cursor:
            cursor.execute(_UPSERT_SQL.format(table=JobEfficiency._meta.db_table), [now, *columns])
        return len(jobs)
    rows = {e.portal_job_id: e for e in JobEfficiency.objects.filter(portal_job_id__in=jobs)}
    for job in jobs:
        row = rows.get(job) or JobEfficiency(portal_job_id=job)
        if row.final:
            continue
        t = _sum(EfficiencyTally(row.samples, row.utilization_sum, row.idle_samples, row.memory_peak_mib), tallies[job])
        row.samples, row.utilization_sum, row.idle_samples, row.memory_peak_mib = astuple(t)
        row.updated_at = now
        row.save()
    return len(jobs)


def finalise(portal_job_ids: Iterable[int]) -> list[int]:
    """Fix the efficiency summary of jobs that have ended; returns the ids fixed now (safe to repeat)."""
    rows = list(JobEfficiency.objects.filter(portal_job_id__in=list(portal_job_ids), final=False))
    for row in rows:
        summary = summarise(EfficiencyTally(row.samples, row.utilization_sum, row.idle_samples, row.memory_peak_mib))
        row.mean_utilization, row.idle_fraction, row.final = summary.mean_utilization, summary.idle_fraction, True
    JobEfficiency.objects.bulk_update(rows, ["mean_utilization", "idle_fraction", "final"])
    return [row.portal_job_id for row in rows]


def record_idle(job_id: int, kind: SafeguardKind, reason: str) -> None:
    SafeguardEvent.objects.create(kind=kind, portal_job_id=job_id, actor=IDLE_ACTOR, reason=reason[:255])


# --- telling people -------------------------------------------------------------------------------


def notify(users: Iterable[User], subject: str, body: str) -> None:
    """E-mail once the transaction commits; a mail outage never undoes a safeguard's action."""
    addresses = sorted({u.email for u in users if u.email})
    if addresses:
        transaction.on_commit(lambda: _send(subject, body, addresses))


def _send(subject: str, body: str, addresses: list[str]) -> None:
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, addresses)
    except OSError as exc:
        log.warning("safeguard e-mail %r to %s not sent: %s", subject, addresses, exc)
