"""The one small interface every cluster backend implements (simulator, Slurm, Kubernetes).

Backends speak in plain dataclasses; the portal's models never cross this line. Every job a
backend holds carries the portal job id, so `find_job` can tell after a crash whether a submit
already happened.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class BackendError(Exception):
    """A backend call failed. `retryable` says whether trying again later can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class BackendUnavailable(BackendError):
    """The backend cannot be reached right now; retrying later can help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class BackendRejected(BackendError):
    """The backend refused the request as it stands; retrying the same request cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class RemoteJobState(StrEnum):
    """A backend job's state, in the backend-neutral words the portal maps from."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"


@dataclass(frozen=True)
class JobRequest:
    """What the portal asks a backend to run."""

    portal_job_id: int
    name: str
    kind: str
    team: str
    user: str
    gpu_model: str
    gpus_per_node: int
    nodes: int
    node_names: tuple[str, ...]
    walltime_s: int
    image: str
    command: tuple[str, ...]
    priority_class: str = "standard"
    checkpoint_dir: str = ""
    env: dict[str, str] = field(default_factory=dict)
    script: str = ""  # a batch script the user wrote, for backends that run scripts (Slurm)


@dataclass(frozen=True)
class RemoteJob:
    """A job as the backend sees it."""

    portal_job_id: int
    backend_job_id: str
    state: RemoteJobState
    reason: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    node_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoteNode:
    """A node as the backend sees it."""

    name: str
    pool: str
    pool_kind: str
    gpu_model: str
    gpus: int
    gpus_used: int
    state: str
    reason: str = ""


@dataclass
class DrainReport:
    """What a drain did to the work on a node, for the operator: what was evicted, what a disruption
    budget kept (with the cluster's reason), what was left alone. Backends whose drain only stops new
    placements (Slurm, the simulator) evict nothing and report an empty, complete drain."""

    node: str
    evicted: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.blocked

    def as_dict(self) -> dict[str, Any]:
        """The report as stored with the node's drain event and returned by the API."""
        return {"evicted": list(self.evicted), "blocked": dict(self.blocked), "skipped": list(self.skipped)}


class ClusterBackend(abc.ABC):
    """Submit, cancel, list jobs by portal id, list nodes, cordon/drain/resume, scale a pool."""

    name: str = ""

    @abc.abstractmethod
    def submit(self, request: JobRequest) -> str:
        """Start the job; return the backend's job id."""

    @abc.abstractmethod
    def cancel(self, backend_job_id: str) -> None:
        """Stop the job; cancelling a finished or unknown job is not an error."""

    def preempt(self, backend_job_id: str, grace_s: int) -> None:
        """Stop the job for preemption: a backend that can signal first gives it `grace_s` to checkpoint."""
        self.cancel(backend_job_id)

    @abc.abstractmethod
    def list_jobs(self, portal_job_ids: list[int] | None = None) -> list[RemoteJob]:
        """The portal's jobs on the backend, all of them or those with the given portal ids."""

    def list_jobs_since(self, since: Mapping[int, datetime]) -> list[RemoteJob]:
        """The portal's jobs with these ids, where no backend job for an id was submitted before `since[id]`.

        A backend that keeps finished jobs in a slower archive after a while (Slurm's slurmdbd) may
        then skip the archive for ids that are too recent to be there.
        """
        return self.list_jobs(list(since))

    def find_job(self, portal_job_id: int) -> RemoteJob | None:
        found = self.list_jobs([portal_job_id])
        return found[0] if found else None

    def backlog_gpus(self) -> int:
        """GPUs of admitted jobs this backend may hold queued beyond its free GPUs, started by the
        backend itself as GPUs free up in the order they were submitted. 0: only onto free GPUs."""
        return 0

    @abc.abstractmethod
    def list_nodes(self) -> list[RemoteNode]:
        """Every node with its GPUs, use and state."""

    @abc.abstractmethod
    def cordon(self, node: str, reason: str) -> None:
        """Stop placing new jobs on the node; running jobs continue."""

    @abc.abstractmethod
    def drain(self, node: str, reason: str) -> DrainReport:
        """Cordon the node; it becomes empty as its jobs end (or are evicted). Returns what it did."""

    @abc.abstractmethod
    def resume(self, node: str) -> None:
        """Make the node schedulable again."""

    @abc.abstractmethod
    def scale_pool(self, pool: str, nodes: int) -> None:
        """Set the number of nodes in an elastic (cloud burst) pool."""

    @abc.abstractmethod
    def read_log(self, backend_job_id: str, offset: int, limit: int = 500) -> list[str]:
        """Log lines of a job from line `offset` on."""

    def exporter_nodes(self, names: Collection[str]) -> dict[str, str]:
        """The node each of these telemetry exporters runs on, for exporters that name themselves
        rather than their node (dcgm-exporter as a Kubernetes DaemonSet: its `Hostname` is its pod's
        name). Names it does not know are left out. None here: on Slurm and the simulator each
        exporter names the node it runs on."""
        return {}

    def health(self) -> dict[str, object]:
        """A small status dict for /healthz; raise BackendUnavailable when down."""
        return {"ok": True, "backend": self.name}
