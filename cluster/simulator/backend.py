"""The simulated grid as a backend: state in its own tables, advanced lazily from the clock.

Nothing runs in the background: every call first brings the grid up to `now` (jobs whose time
is up finish, waiting jobs are placed), so web, worker and beat processes all see one grid.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cluster.backends.base import (
    BackendRejected,
    ClusterBackend,
    JobRequest,
    RemoteJob,
    RemoteJobState,
    RemoteNode,
)
from cluster.gpus import GPU_MODELS
from cluster.models import SimJob, SimNode
from cluster.simulator.model import PoolSpec, decide_outcome, log_lines, parse_pools, script_syntax_error
from cluster.states import NodeState, PoolKind
from portal.locks import transaction_lock

LOCK = "simulator-grid"
FAULTS = ("overheat", "xid", "down")


class SimulatorBackend(ClusterBackend):
    name = "simulator"

    def __init__(
        self,
        pools: list[PoolSpec] | None = None,
        speed: float | None = None,
        failure_rate: float | None = None,
        clock: Callable[[], datetime] = timezone.now,
    ) -> None:
        self.pools = pools if pools is not None else parse_pools(settings.SIM_POOLS)
        self.speed = speed if speed is not None else settings.SIM_SPEED
        self.failure_rate = failure_rate if failure_rate is not None else settings.SIM_FAILURE_RATE
        self.clock = clock
        self.submit_delay_s = float(getattr(settings, "SIM_SUBMIT_DELAY_S", 0.0))

    # --- the grid's clock -------------------------------------------------------------------

    def ensure_grid(self) -> None:
        if SimNode.objects.exists():
            return
        SimNode.objects.bulk_create(
            [
                SimNode(name=name, pool=p.name, pool_kind=p.kind, gpu_model=p.gpu_model, gpus=p.gpus_per_node)
                for p in self.pools
                for name in p.node_names()
            ],
            ignore_conflicts=True,
        )

    def advance(self) -> None:
        """Bring the grid up to now: finish jobs whose time is up, place waiting jobs."""
        now = self.clock()
        with transaction.atomic():
            transaction_lock(LOCK)
            self.ensure_grid()
            for job in SimJob.objects.filter(state=RemoteJobState.RUNNING, ends_at__lte=now):
                self._finish(job, job.outcome_state, job.outcome_exit_code, job.outcome_reason, job.ends_at)
            self._place_waiting(now)

    def _finish(self, job: SimJob, state: str, exit_code: int | None, reason: str, at: datetime | None) -> None:
        SimJob.objects.filter(pk=job.pk, state__in=[RemoteJobState.PENDING, RemoteJobState.RUNNING]).update(
            state=state, exit_code=exit_code, reason=reason, ended_at=at
        )

    def _free_gpus(self) -> dict[str, list[int]]:
        used: dict[str, set[int]] = defaultdict(set)
        for placement in SimJob.objects.filter(state=RemoteJobState.RUNNING).values_list("placement", flat=True):
            for node, gpus in placement.items():
                used[node].update(gpus)
        return {
            n.name: [g for g in range(n.gpus) if g not in used[n.name]] for n in SimNode.objects.filter(state=NodeState.READY)
        }

    def _place_waiting(self, now: datetime) -> None:
        waiting = list(SimJob.objects.filter(state=RemoteJobState.PENDING).order_by("id"))
        if not waiting:
            return
        free = self._free_gpus()
        models = dict(SimNode.objects.values_list("name", "gpu_model"))
        for job in waiting:
            if job.requested_nodes:
                candidates = [n for n in job.requested_nodes if len(free.get(n, [])) >= job.gpus_per_node]
            else:
                candidates = [n for n, gpus in free.items() if models[n] == job.gpu_model and len(gpus) >= job.gpus_per_node]
            if len(candidates) < job.nodes_wanted or (job.requested_nodes and len(candidates) < len(job.requested_nodes)):
                continue
            placement = {}
            for node in candidates[: job.nodes_wanted]:
                placement[node], free[node] = free[node][: job.gpus_per_node], free[node][job.gpus_per_node :]
            SimJob.objects.filter(pk=job.pk, state=RemoteJobState.PENDING).update(
                state=RemoteJobState.RUNNING,
                placement=placement,
                started_at=now,
                ends_at=now + timedelta(seconds=job.runtime_s),
            )

    # --- jobs ---------------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> str:
        if request.gpu_model not in GPU_MODELS:
            raise BackendRejected(f"unknown GPU model {request.gpu_model!r}")
        existing = SimJob.objects.filter(portal_job_id=request.portal_job_id).first()
        if existing is not None:
            return str(existing.pk)  # a repeated submit of the same portal job is the same job
        outcome = decide_outcome(request.portal_job_id, request.walltime_s, self.failure_rate)
        if request.script and (problem := script_syntax_error(request.script)):
            # Fail as Slurm's bash would, early, instead of pretending the job ran.
            outcome = dataclasses.replace(outcome, runtime_s=1.0, state="failed", exit_code=2, reason=f"script: {problem}"[:120])
        with transaction.atomic():
            transaction_lock(LOCK)
            job, _ = SimJob.objects.get_or_create(
                portal_job_id=request.portal_job_id,
                defaults=dict(
                    name=request.name,
                    kind=request.kind,
                    command=list(request.command),
                    gpu_model=request.gpu_model,
                    gpus_per_node=request.gpus_per_node,
                    nodes_wanted=request.nodes,
                    requested_nodes=list(request.node_names),
                    submitted_at=self.clock(),
                    runtime_s=outcome.runtime_s / self.speed,
                    outcome_state=outcome.state,
                    outcome_exit_code=outcome.exit_code,
                    outcome_reason=outcome.reason,
                    load=outcome.load,
                    memory_fraction=outcome.memory_fraction,
                ),
            )
        self.advance()
        if self.submit_delay_s:
            time.sleep(self.submit_delay_s)  # the job exists on the grid, the portal has not heard back yet
        return str(job.pk)

    def cancel(self, backend_job_id: str) -> None:
        with transaction.atomic():
            transaction_lock(LOCK)
            job = SimJob.objects.filter(pk=int(backend_job_id)).first()
            if job is not None:
                self._finish(job, RemoteJobState.CANCELLED, None, "CancelledByUser", self.clock())

    def list_jobs(self, portal_job_ids: list[int] | None = None) -> list[RemoteJob]:
        self.advance()
        jobs = SimJob.objects.all()
        if portal_job_ids is not None:
            jobs = jobs.filter(portal_job_id__in=portal_job_ids)
        return [self._remote(job) for job in jobs.order_by("id")]

    @staticmethod
    def _remote(job: SimJob) -> RemoteJob:
        return RemoteJob(
            portal_job_id=job.portal_job_id,
            backend_job_id=str(job.pk),
            state=RemoteJobState(job.state),
            reason=job.reason,
            exit_code=job.exit_code,
            started_at=job.started_at,
            ended_at=job.ended_at,
            node_names=tuple(sorted(job.placement)),
        )

    def read_log(self, backend_job_id: str, offset: int, limit: int = 500) -> list[str]:
        self.advance()
        job = SimJob.objects.filter(pk=int(backend_job_id)).first()
        if job is None or job.started_at is None or job.ends_at is None:
            return []
        end = job.ended_at or self.clock()
        span = (job.ends_at - job.started_at).total_seconds() or 1.0
        progress = (end - job.started_at).total_seconds() / span
        final = None
        if job.state == RemoteJobState.CANCELLED:
            final = "cancelled"
        elif job.state in (RemoteJobState.SUCCEEDED, RemoteJobState.FAILED):
            final = f"finished: exit code {job.exit_code}" + (f" ({job.reason})" if job.reason else "")
        lines = log_lines(job.kind, job.name, job.portal_job_id, progress, final, job.command)
        return lines[offset : offset + limit]

    # --- nodes ---------------------------------------------------------------------------------

    def list_nodes(self) -> list[RemoteNode]:
        self.advance()
        used: dict[str, int] = defaultdict(int)
        for placement in SimJob.objects.filter(state=RemoteJobState.RUNNING).values_list("placement", flat=True):
            for node, gpus in placement.items():
                used[node] += len(gpus)
        return [
            RemoteNode(n.name, n.pool, n.pool_kind, n.gpu_model, n.gpus, used[n.name], n.state, n.reason)
            for n in SimNode.objects.all()
        ]

    def _set_node_state(self, node: str, state: str, reason: str) -> None:
        self.ensure_grid()
        if not SimNode.objects.filter(name=node).update(state=state, reason=reason):
            raise BackendRejected(f"no node called {node!r}")

    def cordon(self, node: str, reason: str) -> None:
        self._set_node_state(node, NodeState.CORDONED, reason)

    def drain(self, node: str, reason: str) -> None:
        self._set_node_state(node, NodeState.DRAINING, reason)

    def resume(self, node: str) -> None:
        self._set_node_state(node, NodeState.READY, "")

    def scale_pool(self, pool: str, nodes: int) -> None:
        spec = next((p for p in self.pools if p.name == pool), None)
        if spec is None or spec.kind != PoolKind.CLOUD:
            raise BackendRejected(f"{pool!r} is not an elastic cloud pool")
        if nodes < 0:
            raise BackendRejected("nodes must be >= 0")
        with transaction.atomic():
            transaction_lock(LOCK)
            wanted = set(spec.node_names(nodes))
            for name in wanted:
                SimNode.objects.get_or_create(
                    name=name,
                    defaults=dict(pool=spec.name, pool_kind=spec.kind, gpu_model=spec.gpu_model, gpus=spec.gpus_per_node),
                )
            busy = {n for p in SimJob.objects.filter(state=RemoteJobState.RUNNING).values_list("placement", flat=True) for n in p}
            extra = SimNode.objects.filter(pool=pool).exclude(name__in=wanted)
            extra.exclude(name__in=busy).delete()
            extra.filter(name__in=busy).update(state=NodeState.DRAINING, reason="pool scaled down")

    # --- faults on demand (simulator only) ---------------------------------------------------

    def inject_fault(self, node: str, fault: str) -> None:
        if fault not in FAULTS:
            raise BackendRejected(f"fault must be one of {', '.join(FAULTS)}")
        now = self.clock()
        with transaction.atomic():
            transaction_lock(LOCK)
            if not SimNode.objects.filter(name=node).update(fault=fault, fault_since=now):
                raise BackendRejected(f"no node called {node!r}")
            if fault == "down":
                SimNode.objects.filter(name=node).update(state=NodeState.DOWN, reason="node not responding")
                for job in SimJob.objects.filter(state=RemoteJobState.RUNNING):
                    if node in job.placement:
                        self._finish(job, RemoteJobState.FAILED, None, "NodeFail", now)

    def clear_fault(self, node: str) -> None:
        SimNode.objects.filter(name=node).update(fault="", fault_since=None)
        SimNode.objects.filter(name=node, state=NodeState.DOWN).update(state=NodeState.READY, reason="")

    # --- cloud nodes one at a time (the simulated cloud provider, bursting/provider.py) ---------
    # scale_pool sets a count and names nodes by position; a cloud provider adds and removes
    # named instances, so the burst's own provider uses these instead (scale_pool is unchanged).

    def cloud_pool(self, pool: str) -> PoolSpec:
        spec = next((p for p in self.pools if p.name == pool), None)
        if spec is None or spec.kind != PoolKind.CLOUD:
            raise BackendRejected(f"{pool!r} is not an elastic cloud pool")
        return spec

    def add_cloud_node(self, pool: str, name: str) -> None:
        """Join one named node to a cloud pool, as a provisioned instance does; repeating it is harmless."""
        spec = self.cloud_pool(pool)
        with transaction.atomic():
            transaction_lock(LOCK)
            SimNode.objects.get_or_create(
                name=name, defaults=dict(pool=spec.name, pool_kind=spec.kind, gpu_model=spec.gpu_model, gpus=spec.gpus_per_node)
            )

    def remove_cloud_node(self, name: str) -> None:
        """Terminate one cloud node; jobs still on it fail as on a lost instance. An unknown name is not an error."""
        now = self.clock()
        with transaction.atomic():
            transaction_lock(LOCK)
            for job in SimJob.objects.filter(state=RemoteJobState.RUNNING):
                if name in job.placement:
                    self._finish(job, RemoteJobState.FAILED, None, "NodeFail", now)
            SimNode.objects.filter(name=name, pool_kind=PoolKind.CLOUD).delete()
