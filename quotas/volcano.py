"""Pure compilation of team quotas and priority classes into Volcano Queues and Kubernetes PriorityClasses (plain dicts).

The Slurm counterpart is quotas/slurm.py. Quotas are per team and GPU model, and every whole GPU is
the one resource `nvidia.com/gpu`, so each (team, model) pair gets its own Volcano Queue; the job's
node selector picks the model. A shared model's queue counts its own resource (`nvidia.com/mig-1g.10gb`,
`nvidia.com/gpu.shared`). The seed's sample Queue (`capability.resources[]`, `dispatchPolicy`) is
not the real CRD: the real Queue takes resource maps, and `minAvailable` belongs on the Job, not the Queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cluster.backends.kubernetes.manifests import (
    DOMAIN,
    MANAGED_BY,
    QUEUE_API,
    Manifest,
    ManifestConfig,
    ManifestError,
    department_queue_for,
    gpu_resource,
    queue_for,
)

MAX_WEIGHT = 65535  # the Queue CRD's bound
MAX_USER_PRIORITY = 1_000_000_000  # PriorityClass values above this are reserved for the system


@dataclass(frozen=True)
class QueueQuota:
    """One team's quota for one GPU model, as plain data."""

    team: str
    gpu_model: str
    guarantee: int
    limit: int
    weight: int = 1
    lendable: bool = True
    parent: str = ""  # the department's queue of this model, when the team is in one that has a guarantee of it


@dataclass(frozen=True)
class DepartmentQueue:
    """A department's guarantee of one GPU model, and the most its teams may hold together."""

    department: str
    gpu_model: str
    guarantee: int
    limit: int


@dataclass(frozen=True)
class Priority:
    """A portal priority class, as plain data."""

    name: str
    rank: int
    preemptible: bool = False
    description: str = ""


def _gpus(count: int, gpu_model: str) -> dict[str, int]:
    return {gpu_resource(gpu_model): count}


def queue(quota: QueueQuota, config: ManifestConfig) -> Manifest:
    """A Volcano Queue for one team and GPU model.

    - `capability` is the limit: the most GPUs the queue may hold, borrowing included.
    - `deserved` is the guarantee: what reclaim gives back to the team when others borrow it.
    - `guarantee.resource` reserves the guarantee only when the team does not lend it; a
      lendable guarantee stays available to others and comes back through `deserved`.
    - `reclaimable: true`: whatever the queue holds above `deserved` is borrowed and can be taken back.
    - `weight` is the share of idle capacity.
    """
    if quota.limit < quota.guarantee:
        raise ManifestError(f"{quota.team}/{quota.gpu_model}: limit {quota.limit} is below the guarantee {quota.guarantee}")
    group, version, _, kind = QUEUE_API
    spec: Manifest = {
        "weight": min(max(quota.weight, 1), MAX_WEIGHT),
        "capability": _gpus(quota.limit, quota.gpu_model),
        "deserved": _gpus(quota.guarantee, quota.gpu_model),
        "reclaimable": True,
    }
    if not quota.lendable and quota.guarantee:
        spec["guarantee"] = {"resource": _gpus(quota.guarantee, quota.gpu_model)}
    if quota.parent:
        spec["parent"] = quota.parent
    labels = {**MANAGED_BY, f"{DOMAIN}/team": quota.team, f"{DOMAIN}/gpu-model": quota.gpu_model}
    name = queue_for(quota.team, quota.gpu_model, config)
    return {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": name, "labels": labels}, "spec": spec}


def priority_class(priority: Priority) -> Manifest:
    """A Kubernetes PriorityClass: the portal's rank is its value.

    A preemptible class never preempts others itself (`preemptionPolicy: Never`): it runs on
    borrowed GPUs and is first to go, so it must not push anyone out to start.
    """
    value = max(-MAX_USER_PRIORITY, min(priority.rank, MAX_USER_PRIORITY))
    body: Manifest = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": priority.name, "labels": {**MANAGED_BY, f"{DOMAIN}/preemptible": str(priority.preemptible).lower()}},
        "value": value,
        "globalDefault": False,
        "preemptionPolicy": "Never" if priority.preemptible else "PreemptLowerPriority",
    }
    if priority.description:
        body["description"] = priority.description
    return body


def department_queue(department: DepartmentQueue) -> Manifest:
    """A department's Volcano Queue, the parent of its teams' queues of that model (hierarchical queues).

    `deserved` is the department's guarantee, `capability` its teams' limits together: Volcano then
    reclaims for a team from its department's other teams' borrowing after other departments', as
    the portal does.
    """
    if department.limit < department.guarantee:
        department = DepartmentQueue(department.department, department.gpu_model, department.guarantee, department.guarantee)
    group, version, _, kind = QUEUE_API
    labels = {**MANAGED_BY, f"{DOMAIN}/department": department.department, f"{DOMAIN}/gpu-model": department.gpu_model}
    spec: Manifest = {
        "weight": 1,
        "capability": _gpus(department.limit, department.gpu_model),
        "deserved": _gpus(department.guarantee, department.gpu_model),
        "reclaimable": True,
    }
    name = department_queue_for(department.department, department.gpu_model)
    return {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": name, "labels": labels}, "spec": spec}


def class_fence(namespace: str, denied: Iterable[str]) -> Manifest | None:
    """A ResourceQuota that lets no pod of the `denied` priority classes run in a team's namespace.

    Kubernetes' own admission enforces what the portal's validation does for its jobs: a team that
    operators did not give a class cannot use it through kubectl either. None when nothing is denied.
    """
    names = sorted(set(denied))
    if not names:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gridportal-denied-priority-classes", "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {
            "hard": {"pods": "0"},
            "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": names}]},
        },
    }


def compile_queues(quotas: Iterable[QueueQuota], config: ManifestConfig) -> list[Manifest]:
    """Every Queue, sorted by name so exports are stable for GitOps diffs."""
    return sorted((queue(q, config) for q in quotas), key=lambda m: str(m["metadata"]["name"]))
