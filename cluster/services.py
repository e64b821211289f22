"""The cluster app's write path: node sync, node operations with their audit trail, grid history."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Max, Model, Q, Sum
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import Signal
from django.utils import timezone

from cluster.backends import ClusterBackend, get_backend
from cluster.backends.base import BackendRejected
from cluster.gpus import GPU_MODELS
from cluster.models import GridSample, JobEfficiency, Node, NodeEvent, Pool, UnresolvedExporter
from cluster.states import NODE_TRANSITIONS, NodeState
from portal.broadcast import send_on_commit
from portal.states import move

GRID_HISTORY_KEPT = timedelta(days=7)
BACKEND_ACTOR = "backend"  # node events seen by sync, not asked for: they carry no drain report


class NodeActionError(Exception):
    """A node operation was refused; the message says why."""


def sync_nodes(backend: ClusterBackend | None = None) -> int:
    """Copy the backend's nodes into the portal; nodes the backend no longer has are removed."""
    remote = (backend or get_backend()).list_nodes()
    now = timezone.now()
    with transaction.atomic():
        for r in remote:
            pool, _ = Pool.objects.get_or_create(name=r.pool, defaults={"kind": r.pool_kind, "gpu_model": r.gpu_model})
            node, created = Node.objects.get_or_create(
                name=r.name,
                defaults=dict(pool=pool, gpu_model=r.gpu_model, gpus=r.gpus, state=r.state, reason=r.reason),
            )
            if not created and node.state != r.state:
                NodeEvent.objects.create(node=node, from_state=node.state, to_state=r.state, actor=BACKEND_ACTOR, reason=r.reason)
            Node.objects.filter(pk=node.pk).update(
                pool=pool,
                gpu_model=r.gpu_model,
                gpus=r.gpus,
                gpus_used=r.gpus_used,
                state=r.state,
                reason=r.reason,
                updated_at=now,
            )
        Node.objects.exclude(name__in=[r.name for r in remote]).delete()
    send_on_commit("grid", {"type": "grid.changed"})
    return len(remote)


def record_unresolved(counts: Mapping[str, int], now: datetime) -> None:
    """Add the series a cycle left out because their host named no node (telemetry/hosts.py)."""
    for name, series in sorted(counts.items()):
        row, created = UnresolvedExporter.objects.get_or_create(
            name=name[:253], defaults={"series": series, "first_seen": now, "last_seen": now}
        )
        if not created:
            UnresolvedExporter.objects.filter(pk=row.pk).update(series=F("series") + series, last_seen=now)


def recent_unresolved(since: datetime) -> list[UnresolvedExporter]:
    """Host names seen since then that named no node: the dashboard's note."""
    return list(UnresolvedExporter.objects.filter(last_seen__gte=since))


def _change_node(name: str, to: NodeState, actor: str, reason: str) -> Node:
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise NodeActionError(f"no node called {name!r}")
    if to != NodeState.READY and not reason.strip():
        raise NodeActionError("reason: a reason is required to cordon or drain a node")
    if len(reason) > 255:
        raise NodeActionError("reason: at most 255 characters")
    report = _act_on_backend(get_backend(), name, to, reason)
    with transaction.atomic():
        left = move(Node, node.pk, to, NODE_TRANSITIONS, reason=reason, updated_at=timezone.now())
        if left is not None:
            NodeEvent.objects.create(
                node=node, from_state=left, to_state=to, actor=actor, reason=reason, drain_report=report or {}
            )
            send_on_commit("grid", {"type": "grid.changed"})
    node.refresh_from_db()
    return node


def _act_on_backend(backend: ClusterBackend, name: str, to: NodeState, reason: str) -> dict[str, Any] | None:
    """Tell the backend; a drain's report (pods evicted, pods a disruption budget kept) comes back to be stored."""
    try:
        if to == NodeState.CORDONED:
            backend.cordon(name, reason)
        elif to == NodeState.DRAINING:
            return backend.drain(name, reason).as_dict()
        else:
            backend.resume(name)
    except BackendRejected as exc:
        raise NodeActionError(str(exc)) from exc
    return None


def last_drain_report(node: Node) -> dict[str, Any] | None:
    """The report of the node's latest drain (a repeated drain records a draining → draining event), or None."""
    event = node.events.filter(to_state=NodeState.DRAINING).exclude(actor=BACKEND_ACTOR).first()
    return event.drain_report if event is not None else None


def cordon(name: str, actor: str, reason: str) -> Node:
    return _change_node(name, NodeState.CORDONED, actor, reason)


def drain(name: str, actor: str, reason: str) -> Node:
    return _change_node(name, NodeState.DRAINING, actor, reason)


def resume(name: str, actor: str, reason: str = "") -> Node:
    return _change_node(name, NodeState.READY, actor, reason)


@dataclass(frozen=True)
class ModelCapacity:
    max_gpus_per_node: int
    total_gpus: int
    healthy_gpus: int


def capacity_by_model() -> dict[str, ModelCapacity]:
    """GPUs per model in the grid, as validation and the dashboard need them."""
    rows = Node.objects.values("gpu_model").annotate(
        largest=Max("gpus"), total=Sum("gpus"), healthy=Sum("gpus", filter=Q(state=NodeState.READY))
    )
    return {r["gpu_model"]: ModelCapacity(r["largest"], r["total"], r["healthy"] or 0) for r in rows}


# Higher apps (bursting) say which GPUs elastic cloud pools can add; cluster cannot import them.
BurstableSource = Callable[[], dict[str, ModelCapacity]]
_burstable_sources: list[BurstableSource] = []


# Sent when what jobs may ask for can have changed: a node or pool saved or deleted, or a model a
# burstable source reads (memos of the grid's shape listen).
capacity_changed = Signal()


def register_burstable(source: BurstableSource, models: Iterable[type[Model]] = ()) -> None:
    """`source` tells what elastic pools can add; a save or delete of any of `models` changes its answer."""
    if source not in _burstable_sources:
        _burstable_sources.append(source)
    for model in models:
        watch_capacity(model)


def _capacity_changed(sender: type[Model], **kwargs: object) -> None:
    capacity_changed.send(sender=sender)


def watch_capacity(model: type[Model]) -> None:
    """Send `capacity_changed` whenever an instance of `model` is saved or deleted."""
    uid = f"capacity-{model._meta.label_lower}"
    post_save.connect(_capacity_changed, sender=model, dispatch_uid=uid)
    post_delete.connect(_capacity_changed, sender=model, dispatch_uid=uid)
    for field in model._meta.many_to_many:  # e.g. a policy's instance types
        m2m_changed.connect(_capacity_changed, sender=field.remote_field.through, dispatch_uid=f"{uid}-{field.name}")


def burstable_capacity() -> dict[str, ModelCapacity]:
    """GPUs per model that registered sources can add on demand (burst policies into elastic pools)."""
    found: dict[str, ModelCapacity] = {}
    for source in _burstable_sources:
        for model, extra in source().items():
            found[model] = _combine(found[model], extra) if model in found else extra
    return found


def _combine(a: ModelCapacity, b: ModelCapacity) -> ModelCapacity:
    return ModelCapacity(
        max(a.max_gpus_per_node, b.max_gpus_per_node), a.total_gpus + b.total_gpus, a.healthy_gpus + b.healthy_gpus
    )


# Higher apps (bursting) say which nodes only some teams may use: the nodes a burst paid for on behalf
# of a policy's teams. Admission keeps other teams' jobs off them.
@dataclass(frozen=True)
class TeamsOnly:
    """Only `teams` (slugs) may have jobs placed on the node; `why` is the sentence a job kept off it is shown."""

    teams: frozenset[str]
    why: str


TeamsOnlySource = Callable[[], dict[str, TeamsOnly]]
_teams_only_sources: list[TeamsOnlySource] = []


def register_teams_only(source: TeamsOnlySource) -> None:
    """`source` names nodes that only some teams may use ({node name: TeamsOnly})."""
    if source not in _teams_only_sources:
        _teams_only_sources.append(source)


def teams_only_nodes() -> dict[str, TeamsOnly]:
    """Every node some source keeps for some teams; a node two sources name is kept for the teams both allow."""
    found: dict[str, TeamsOnly] = {}
    for source in _teams_only_sources:
        for node, rule in source().items():
            was = found.get(node)
            found[node] = rule if was is None else TeamsOnly(was.teams & rule.teams, f"{was.why}; {rule.why}")
    return found


def capacity_with_bursts() -> dict[str, ModelCapacity]:
    """What a job may ask for: the grid's nodes plus what elastic pools can add, so a model only a burst
    offers (an empty cloud pool with a policy) is valid; its jobs wait and the burst policy sees them."""
    merged = dict(capacity_by_model())
    for model, extra in burstable_capacity().items():
        merged[model] = _combine(merged[model], extra) if model in merged else extra
    return merged


def known_gpu_models() -> frozenset[str]:
    return frozenset(GPU_MODELS)


def record_grid_sample(
    allocated_by_pool: dict[str, int], pending_by_model: dict[str, tuple[int, int]], running_by_pool: dict[str, int]
) -> int:
    """Store one history point per pool (called by the periodic task with figures from jobs)."""
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for pool_id, gpus, state in Node.objects.values_list("pool_id", "gpus", "state"):
        totals[pool_id][0] += gpus
        if state == NodeState.READY:
            totals[pool_id][1] += gpus
    now = timezone.now()
    samples = []
    for pool in Pool.objects.all():
        total, healthy = totals.get(pool.pk, [0, 0])
        jobs_pending, gpus_pending = pending_by_model.get(pool.gpu_model, (0, 0))
        samples.append(
            GridSample(
                at=now,
                pool=pool,
                gpus_total=total,
                gpus_healthy=healthy,
                gpus_allocated=allocated_by_pool.get(pool.name, 0),
                jobs_running=running_by_pool.get(pool.name, 0),
                jobs_pending=jobs_pending,
                gpus_pending=gpus_pending,
            )
        )
    GridSample.objects.bulk_create(samples)
    GridSample.objects.filter(at__lt=now - GRID_HISTORY_KEPT).delete()
    return len(samples)


# --- telemetry for the scheduler -------------------------------------------------------------------


def idle_reclaimable_jobs() -> frozenset[int]:
    """Portal job ids the telemetry guard marked reclaimable for idle GPUs (`IDLE_TEAM_ACTIONS`) and still running."""
    rows = JobEfficiency.objects.filter(final=False, idle_decision="reclaimable").values_list("portal_job_id", flat=True)
    return frozenset(rows)


def idle_fractions(job_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(idle GPU samples, all GPU samples) per portal job id, for the jobs that have any."""
    rows = JobEfficiency.objects.filter(portal_job_id__in=list(job_ids), samples__gt=0)
    return {r.portal_job_id: (r.idle_samples, r.samples) for r in rows.only("portal_job_id", "idle_samples", "samples")}
