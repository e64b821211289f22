"""Slurm and Kubernetes on the same GPU nodes (`CLUSTER_BACKEND=slurm+kubernetes`).

Where a site runs slurmd and the kubelet on the same hosts (the slurm-operator set-up), each GPU
node belongs to both. The portal stays the one admission controller: it places every job on nodes,
so one quota, one fair share and one bill span both engines, and then hands the job to the engine
that runs its kind of work:

- a job with a container image and no batch script runs on Kubernetes (a Volcano Job or a
  PyTorchJob, pinned to the portal's nodes by node affinity);
- every other job runs on Slurm, pinned to the portal's nodes (`SLURM_PIN_NODES` is `all` here:
  left to choose, Slurm could start a job on GPUs that Kubernetes pods hold, which it cannot see).

The backend job id names the engine (`slurm:4711`, `kubernetes:volcano/team-vision/gp-12`), so a
cancel, a preemption or a log read goes back to the engine that has the job. A node that both
engines list is one node to the portal: its GPUs once, the GPUs either engine's jobs use added up,
its state the worse of the two; cordon, drain and resume act on it in both. Slurm gets no backlog
(queued jobs it would start by itself on GPUs it believes free).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from datetime import datetime

from cluster.backends.base import BackendRejected, ClusterBackend, DrainReport, JobRequest, RemoteJob, RemoteNode
from cluster.backends.kubernetes.backend import KubernetesBackend
from cluster.backends.slurm import SlurmBackend
from cluster.backends.slurm.config import SlurmConfig
from cluster.states import NodeState

SLURM, KUBERNETES = "slurm", "kubernetes"
# The worse state wins when the two engines disagree about a node.
STATE_RANK: dict[str, int] = {NodeState.READY: 0, NodeState.CORDONED: 1, NodeState.DRAINING: 2, NodeState.DOWN: 3}


def engine_for(request: JobRequest) -> str:
    """Which engine runs the job: Kubernetes for a container image without a batch script, else Slurm."""
    return KUBERNETES if request.image and not request.script else SLURM


def split_id(backend_job_id: str) -> tuple[str, str]:
    """`slurm:4711` -> ("slurm", "4711"); an id that names no engine is refused."""
    engine, colon, inner = backend_job_id.partition(":")
    if not colon or engine not in (SLURM, KUBERNETES) or not inner:
        raise BackendRejected(f"job id {backend_job_id[:80]!r} names no engine (slurm:ID or kubernetes:ID)")
    return engine, inner


def merge_nodes(slurm: list[RemoteNode], kubernetes: list[RemoteNode]) -> list[RemoteNode]:
    """One node per name: a node both engines list has its GPUs once and the use of both added up."""
    by_name = {n.name: n for n in slurm}
    merged = dict(by_name)
    for node in kubernetes:
        other = by_name.get(node.name)
        if other is None:
            merged[node.name] = node
            continue
        worse = max((other, node), key=lambda n: STATE_RANK.get(n.state, 3))
        reasons = [f"{engine}: {n.reason}" for engine, n in ((SLURM, other), (KUBERNETES, node)) if n.reason]
        if other.gpu_model != node.gpu_model or other.gpus != node.gpus:
            reasons.append(
                f"the engines disagree: Slurm {other.gpus}× {other.gpu_model}, Kubernetes {node.gpus}× {node.gpu_model}"
            )
        merged[node.name] = dataclasses.replace(
            other,  # the Slurm partition is the pool: one partition per GPU pool
            gpus=min(other.gpus, node.gpus),
            gpus_used=other.gpus_used + node.gpus_used,
            state=worse.state,
            reason="; ".join(reasons),
        )
    return [merged[name] for name in sorted(merged)]


class HybridBackend(ClusterBackend):
    """Slurm and Kubernetes on the same nodes, the portal placing every job (see the module's text)."""

    name = "slurm+kubernetes"

    def __init__(self, slurm: SlurmBackend | None = None, kubernetes: KubernetesBackend | None = None) -> None:
        self.slurm = slurm or SlurmBackend(dataclasses.replace(SlurmConfig.from_settings(), pin_nodes="all", backlog_gpus=0))
        self.kubernetes = kubernetes or KubernetesBackend()

    def _engine(self, name: str) -> ClusterBackend:
        return self.slurm if name == SLURM else self.kubernetes

    def _tag(self, engine: str, jobs: list[RemoteJob]) -> list[RemoteJob]:
        return [dataclasses.replace(j, backend_job_id=f"{engine}:{j.backend_job_id}") for j in jobs]

    # --- jobs --------------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> str:
        engine = engine_for(request)
        return f"{engine}:{self._engine(engine).submit(request)}"

    def cancel(self, backend_job_id: str) -> None:
        engine, inner = split_id(backend_job_id)
        self._engine(engine).cancel(inner)

    def preempt(self, backend_job_id: str, grace_s: int) -> None:
        engine, inner = split_id(backend_job_id)
        self._engine(engine).preempt(inner, grace_s)

    def list_jobs(self, portal_job_ids: list[int] | None = None) -> list[RemoteJob]:
        return self._tag(SLURM, self.slurm.list_jobs(portal_job_ids)) + self._tag(
            KUBERNETES, self.kubernetes.list_jobs(portal_job_ids)
        )

    def list_jobs_since(self, since: Mapping[int, datetime]) -> list[RemoteJob]:
        return self._tag(SLURM, self.slurm.list_jobs_since(since)) + self._tag(KUBERNETES, self.kubernetes.list_jobs_since(since))

    def find_job(self, portal_job_id: int) -> RemoteJob | None:
        """The job on whichever engine has it: both are asked, so a crash between submit and record
        is found wherever the job went."""
        for engine in (SLURM, KUBERNETES):
            found = self._engine(engine).find_job(portal_job_id)
            if found is not None:
                return self._tag(engine, [found])[0]
        return None

    def read_log(self, backend_job_id: str, offset: int, limit: int = 500) -> list[str]:
        engine, inner = split_id(backend_job_id)
        return self._engine(engine).read_log(inner, offset, limit)

    # --- nodes -------------------------------------------------------------------------------

    def list_nodes(self) -> list[RemoteNode]:
        return merge_nodes(self.slurm.list_nodes(), self.kubernetes.list_nodes())

    def _holders(self, node: str) -> list[ClusterBackend]:
        """The engines that list the node (both, on a shared node)."""
        engines: tuple[ClusterBackend, ...] = (self.slurm, self.kubernetes)
        holders = [b for b in engines if any(n.name == node for n in b.list_nodes())]
        if not holders:
            raise BackendRejected(f"node {node!r} is known to neither Slurm nor Kubernetes")
        return holders

    def cordon(self, node: str, reason: str) -> None:
        for backend in self._holders(node):
            backend.cordon(node, reason)

    def drain(self, node: str, reason: str) -> DrainReport:
        """Drain it in both: Slurm stops placing there, Kubernetes evicts what its budgets allow."""
        report = DrainReport(node)
        for backend in self._holders(node):
            done = backend.drain(node, reason)
            report.evicted += done.evicted
            report.blocked |= done.blocked
            report.skipped += done.skipped
        return report

    def resume(self, node: str) -> None:
        for backend in self._holders(node):
            backend.resume(node)

    def scale_pool(self, pool: str, nodes: int) -> None:
        """Elastic pools are Kubernetes' (Cluster API MachineDeployments)."""
        self.kubernetes.scale_pool(pool, nodes)

    def exporter_nodes(self, names: Collection[str]) -> dict[str, str]:
        return self.kubernetes.exporter_nodes(names)

    def health(self) -> dict[str, object]:
        """Both engines' health; either one down raises BackendUnavailable from its own check."""
        return {"ok": True, "backend": self.name, SLURM: self.slurm.health(), KUBERNETES: self.kubernetes.health()}
