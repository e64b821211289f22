"""The simulated grid as a backend: state in its own tables, advanced lazily from the clock.

Nothing runs in the background: every call first brings the grid up to `now` (jobs whose time
is up finish, waiting jobs are placed), so web, worker and beat processes all see one grid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cluster.backends.base import (
    BackendRejected,
    ClusterBackend,
    DrainReport,
    JobRequest,
    RemoteJob,
    RemoteJobState,
    RemoteNode,
)
from cluster.gpus import GPU_MODELS
from cluster.models import SimJob, SimNode
from cluster.simulator.model import (
    PoolSpec,
    checkpoint_progress,
    decide_outcome,
    log_lines,
    parse_pools,
    resumed_work,
    script_syntax_error,
)
from cluster.states import NodeState, PoolKind
from portal.locks import transaction_lock

LOCK = "simulator-grid"
FAULTS = ("overheat", "xid", "down")
# Where a job finds its checkpoint location and interval (artifacts.services.job_environment sets them).
CHECKPOINT_DIR_ENV = "GRID_CHECKPOINT_DIR"
CHECKPOINT_INTERVAL_ENV = "GRID_CHECKPOINT_INTERVAL_S"
CHECKPOINT_FILE = "sim-checkpoint.json"
RESTARTABLE = (RemoteJobState.PREEMPTED,)  # a new submit of such a job is its next attempt
INTERACTIVE = "interactive"  # jobs.models.JobKind.INTERACTIVE: a notebook session


def read_checkpoint(directory: str, portal_job_id: int) -> float | None:
    """The work saved in the job's checkpoint file, or None when there is none (or it is another job's)."""
    if not directory:
        return None
    try:
        saved = json.loads((Path(directory) / CHECKPOINT_FILE).read_text(encoding="utf-8"))
        if int(saved["portal_job_id"]) != portal_job_id:
            return None
        return float(saved["progress_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_checkpoint(directory: str, portal_job_id: int, progress_s: float, total_s: float, at: datetime) -> None:
    """Write the job's checkpoint as a job would: the new file replaces the old one whole, never half-written."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    body = {"portal_job_id": portal_job_id, "progress_s": progress_s, "total_s": total_s, "written_at": at.isoformat()}
    partial = folder / f".{CHECKPOINT_FILE}.partial"
    partial.write_text(json.dumps(body), encoding="utf-8")
    os.replace(partial, folder / CHECKPOINT_FILE)


def checkpoint_interval(env: dict[str, str]) -> float:
    try:
        return max(0.0, float(env.get(CHECKPOINT_INTERVAL_ENV, "0")))
    except ValueError:
        return 0.0


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
            self._write_checkpoints(now)
            self._place_waiting(now)

    def _saved_work(self, job: SimJob, at: datetime) -> float:
        """The work in the last checkpoint the running job has written by `at`."""
        elapsed = (at - job.started_at).total_seconds() * self.speed if job.started_at else 0.0
        return checkpoint_progress(job.work_done_s, elapsed, job.checkpoint_every_s, job.work_total_s)

    def _checkpoint(self, job: SimJob, at: datetime, done: bool = False) -> None:
        saved = job.work_total_s if done else self._saved_work(job, at)
        if saved > job.last_checkpoint_s and job.checkpoint_dir:
            write_checkpoint(job.checkpoint_dir, job.portal_job_id, saved, job.work_total_s, at)
            SimJob.objects.filter(pk=job.pk).update(last_checkpoint_s=saved)

    def _write_checkpoints(self, now: datetime) -> None:
        """The checkpoints running jobs have written since the grid last advanced (the newest one each)."""
        for job in SimJob.objects.filter(state=RemoteJobState.RUNNING, checkpoint_every_s__gt=0).exclude(checkpoint_dir=""):
            self._checkpoint(job, now)

    def _finish(self, job: SimJob, state: str, exit_code: int | None, reason: str, at: datetime | None) -> None:
        if job.state == RemoteJobState.RUNNING and job.checkpoint_every_s > 0 and at is not None:
            # The checkpoints it wrote before it ended, up to the last one; a job that completes writes its whole work.
            self._checkpoint(job, at, done=state == RemoteJobState.SUCCEEDED)
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
        if existing is not None and existing.state in RESTARTABLE:
            return self._restart(existing, request)
        if existing is not None:
            return str(existing.pk)  # a repeated submit of the same portal job is the same job
        outcome = decide_outcome(request.portal_job_id, request.walltime_s, self.failure_rate)
        if request.kind == INTERACTIVE:  # a session runs until it is stopped, culled or its walltime is up
            # Its GPUs idle until the user computes on them (the telemetry then shows a notebook left idle).
            outcome = dataclasses.replace(
                outcome, runtime_s=float(request.walltime_s), state="succeeded", exit_code=0, reason="", load=0.0
            )
        checkpoint_dir = request.env.get(CHECKPOINT_DIR_ENV, "")
        done = resumed_work(outcome.runtime_s, read_checkpoint(checkpoint_dir, request.portal_job_id))
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
                    runtime_s=(outcome.runtime_s - done) / self.speed,
                    work_total_s=outcome.runtime_s,
                    work_done_s=done,
                    last_checkpoint_s=done,
                    checkpoint_dir=checkpoint_dir,
                    checkpoint_every_s=checkpoint_interval(request.env),
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

    def _restart(self, job: SimJob, request: JobRequest) -> str:
        """The next attempt of a preempted job: it starts from its last checkpoint, so only the rest of its work remains."""
        checkpoint_dir = request.env.get(CHECKPOINT_DIR_ENV, "") or job.checkpoint_dir
        done = resumed_work(job.work_total_s, read_checkpoint(checkpoint_dir, job.portal_job_id))
        with transaction.atomic():
            transaction_lock(LOCK)
            SimJob.objects.filter(pk=job.pk, state__in=RESTARTABLE).update(
                state=RemoteJobState.PENDING, placement={}, requested_nodes=list(request.node_names), reason="",
                exit_code=None, started_at=None, ends_at=None, ended_at=None, submitted_at=self.clock(),
                runtime_s=(job.work_total_s - done) / self.speed, work_done_s=done, last_checkpoint_s=done,
                checkpoint_dir=checkpoint_dir, checkpoint_every_s=checkpoint_interval(request.env),
                attempts=job.attempts + 1,
            )  # fmt: skip
        self.advance()
        return str(job.pk)

    def preempt(self, backend_job_id: str, grace_s: int) -> None:
        """Stop the job for preemption; it has written its checkpoints up to now, and a new submit resumes it."""
        with transaction.atomic():
            transaction_lock(LOCK)
            job = SimJob.objects.filter(pk=int(backend_job_id)).first()
            if job is not None:
                self._finish(job, RemoteJobState.PREEMPTED, None, "Preempted", self.clock())

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
        if job.work_total_s > 0:  # an attempt resumed from a checkpoint goes on from where that left off
            progress = (job.work_done_s + (end - job.started_at).total_seconds() * self.speed) / job.work_total_s
        else:
            progress = (end - job.started_at).total_seconds() / ((job.ends_at - job.started_at).total_seconds() or 1.0)
        final = None
        if job.state == RemoteJobState.CANCELLED:
            final = "cancelled"
        elif job.state == RemoteJobState.PREEMPTED:
            final = "preempted"
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

    def drain(self, node: str, reason: str) -> DrainReport:
        """As Slurm's drain: nothing new is placed and running jobs end on their own; the simulator
        evicts nothing, so nothing can be blocked and the report is empty."""
        self._set_node_state(node, NodeState.DRAINING, reason)
        return DrainReport(node)

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
                        self._lost(job, now)

    def _lost(self, job: SimJob, now: datetime) -> None:
        """A job whose node died: one that checkpoints is requeued to resume from its last checkpoint (as Slurm's
        --requeue does), one that does not fails."""
        checkpoints = job.checkpoint_every_s > 0 and bool(job.checkpoint_dir)
        self._finish(job, RemoteJobState.PREEMPTED if checkpoints else RemoteJobState.FAILED, None, "NodeFail", now)

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
                    self._lost(job, now)
            SimNode.objects.filter(name=name, pool_kind=PoolKind.CLOUD).delete()
