"""Pure mapping of cluster objects (plain dicts as the API returns them) onto portal terms.

Volcano Jobs report `status.state.phase`; PyTorchJobs report a list of conditions; nodes report
allocatable GPUs, the GPU product label, `spec.unschedulable` and a Ready condition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable, Mapping
from datetime import datetime
from typing import Any

from cluster.backends.base import RemoteJob, RemoteJobState, RemoteNode
from cluster.backends.kubernetes.manifests import (
    DOMAIN,
    GPU_PRODUCT_LABEL,
    JOB_ID_LABEL,
    PYTORCH_JOB_API,
    VOLCANO_JOB_API,
    Manifest,
    is_gpu_resource,
    node_gpus,
    resource_count,
)
from cluster.states import NodeState, PoolKind

CORDON_REASON_ANNOTATION = f"{DOMAIN}/cordon-reason"
DRAIN_ANNOTATION = f"{DOMAIN}/draining"
DRAIN_BLOCKED_ANNOTATION = f"{DOMAIN}/drain-blocked"

S = RemoteJobState
VOLCANO_PHASES: dict[str, RemoteJobState] = {
    "Pending": S.PENDING,
    "Restarting": S.PENDING,  # the gang is being restarted (an eviction); it will run again
    "Running": S.RUNNING,
    "Completing": S.RUNNING,
    "Completed": S.SUCCEEDED,
    "Aborting": S.CANCELLED,
    "Aborted": S.CANCELLED,
    "Terminating": S.FAILED,
    "Terminated": S.FAILED,
    "Failed": S.FAILED,
}
# PyTorchJob condition types, most decisive first: the first one that is True wins.
PYTORCH_CONDITIONS: tuple[tuple[str, RemoteJobState], ...] = (
    ("Succeeded", S.SUCCEEDED),
    ("Failed", S.FAILED),
    ("Suspended", S.PENDING),
    ("Restarting", S.PENDING),
    ("Running", S.RUNNING),
    ("Created", S.PENDING),
)
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as the API writes it ("2026-01-02T03:04:05Z"), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def backend_job_id(kind_plural: str, namespace: str, name: str) -> str:
    """The id the portal stores: `<plural>/<namespace>/<name>`, enough to find the object again."""
    return f"{kind_plural}/{namespace}/{name}"


def split_backend_job_id(value: str) -> tuple[str, str, str]:
    """The inverse of backend_job_id; ValueError when it is not one of ours."""
    plural, namespace, name = value.split("/")
    if plural not in (VOLCANO_JOB_API[2], PYTORCH_JOB_API[2]) or not namespace or not name:
        raise ValueError(value)
    return plural, namespace, name


def _portal_id(obj: Mapping[str, Any]) -> int | None:
    raw = (obj.get("metadata", {}).get("labels") or {}).get(JOB_ID_LABEL, "")
    return int(raw) if str(raw).isdigit() else None


def _join(*parts: Any) -> str:
    return ": ".join(str(p) for p in parts if p)[:300]


def volcano_remote(obj: Mapping[str, Any]) -> RemoteJob | None:
    """A Volcano Job as a RemoteJob; None when it carries no portal id."""
    portal_id = _portal_id(obj)
    if portal_id is None:
        return None
    meta, status = obj["metadata"], obj.get("status") or {}
    state_block = status.get("state") or {}
    phase = state_block.get("phase") or "Pending"
    state = VOLCANO_PHASES.get(phase, S.PENDING)
    changed = parse_time(state_block.get("lastTransitionTime"))
    running = [c for c in status.get("conditions") or [] if c.get("status") == "Running"]
    started = parse_time(running[0].get("lastTransitionTime")) if running else None
    return RemoteJob(
        portal_job_id=portal_id,
        backend_job_id=backend_job_id(VOLCANO_JOB_API[2], meta["namespace"], meta["name"]),
        state=state,
        reason=_join(phase, state_block.get("reason"), state_block.get("message")) if state != S.RUNNING else "",
        started_at=started or (changed if state == S.RUNNING else None),
        ended_at=changed if state in TERMINAL else None,
    )


def pytorch_remote(obj: Mapping[str, Any]) -> RemoteJob | None:
    """A PyTorchJob as a RemoteJob; None when it carries no portal id."""
    portal_id = _portal_id(obj)
    if portal_id is None:
        return None
    meta, status = obj["metadata"], obj.get("status") or {}
    true_conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    state, condition = S.PENDING, {}
    for kind, mapped in PYTORCH_CONDITIONS:
        if kind in true_conditions:
            state, condition = mapped, true_conditions[kind]
            break
    return RemoteJob(
        portal_job_id=portal_id,
        backend_job_id=backend_job_id(PYTORCH_JOB_API[2], meta["namespace"], meta["name"]),
        state=state,
        reason=_join(condition.get("reason"), condition.get("message")) if state != S.RUNNING else "",
        started_at=parse_time(status.get("startTime")),
        ended_at=parse_time(status.get("completionTime") or condition.get("lastTransitionTime")) if state in TERMINAL else None,
    )


# --- pods of a job -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PodsSeen:
    """What a job's pods say that its Volcano Job or PyTorchJob does not: where they ran, how they ended."""

    node_names: tuple[str, ...] = ()
    exit_code: int | None = None


def container_exit_codes(pod: Mapping[str, Any]) -> list[int]:
    """Exit codes of the pod's containers that have terminated, in the order the kubelet lists them."""
    codes = []
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (c.get("state") or {}).get("terminated") or {}
        if isinstance(terminated.get("exitCode"), int):
            codes.append(terminated["exitCode"])
    return codes


def job_exit_code(pods: Iterable[Mapping[str, Any]]) -> int | None:
    """The job's exit code: the first non-zero one, pods by name (a PyTorchJob's master, a Volcano Job's
    task 0 first); 0 when every terminated container exited 0; None when none has terminated."""
    ordered = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", "")))
    codes = [code for pod in ordered for code in container_exit_codes(pod)]
    return next((code for code in codes if code != 0), 0 if codes else None)


def pods_by_job(pods: Iterable[Mapping[str, Any]]) -> dict[int, PodsSeen]:
    """Per portal job id (the pods' label): the nodes its pods were placed on and its exit code."""
    grouped: dict[int, list[Mapping[str, Any]]] = {}
    for pod in pods:
        portal_id = _portal_id(pod)
        if portal_id is not None:
            grouped.setdefault(portal_id, []).append(pod)
    return {
        portal_id: PodsSeen(
            node_names=tuple(sorted({str(n) for p in group if (n := (p.get("spec") or {}).get("nodeName"))})),
            exit_code=job_exit_code(group),
        )
        for portal_id, group in grouped.items()
    }


def with_pods(remote: RemoteJob, seen: PodsSeen | None) -> RemoteJob:
    """The job with its pods' placement (once it left pending) and exit code (once it ended), as Slurm
    reports a job's nodes and exit code."""
    if seen is None or remote.state == S.PENDING:
        return remote
    exit_code = seen.exit_code if remote.state in TERMINAL else None
    return dataclasses.replace(remote, node_names=seen.node_names, exit_code=exit_code)


# --- nodes ----------------------------------------------------------------------------------


def gpu_count(resources: Mapping[str, Any] | None) -> int:
    """GPUs (whole, MIG slices or time-sliced replicas) in a resource map; extended resources are whole numbers."""
    return sum(resource_count(v) for k, v in (resources or {}).items() if is_gpu_resource(k))


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs a pod holds: the sum of its containers' limits."""
    containers = (pod.get("spec") or {}).get("containers") or []
    return sum(gpu_count((c.get("resources") or {}).get("limits")) for c in containers)


def gpus_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    used: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            used[node] = used.get(node, 0) + pod_gpus(pod)
    return used


def _ready(node: Mapping[str, Any]) -> tuple[bool, str]:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True", _join(c.get("reason"), c.get("message"))
    return False, "no Ready condition reported"


def node_state(node: Mapping[str, Any]) -> tuple[str, str]:
    """The portal's node state and reason: down beats draining beats cordoned beats ready."""
    annotations = node.get("metadata", {}).get("annotations") or {}
    ready, ready_reason = _ready(node)
    if not ready:
        return NodeState.DOWN, ready_reason or "node not ready"
    if (node.get("spec") or {}).get("unschedulable"):
        reason = annotations.get(CORDON_REASON_ANNOTATION, "") or "cordoned outside the portal"
        if annotations.get(DRAIN_ANNOTATION) == "true":
            blocked = annotations.get(DRAIN_BLOCKED_ANNOTATION, "")
            return NodeState.DRAINING, _join(reason, f"not evicted: {blocked}" if blocked else "")
        return NodeState.CORDONED, reason
    return NodeState.READY, ""


def remote_node(node: Mapping[str, Any], gpus_used: int, pool_label: str, burst_pools: Iterable[str]) -> RemoteNode | None:
    """A GPU node as a RemoteNode; None for nodes without GPUs (control plane, CPU-only)."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    product = labels.get(GPU_PRODUCT_LABEL, "")
    model, gpus = node_gpus((node.get("status") or {}).get("allocatable"), product)
    if not gpus and not product:
        return None
    pool = labels.get(pool_label) or f"k8s-{model or 'gpu'}"
    state, reason = node_state(node)
    kind = PoolKind.CLOUD if pool in set(burst_pools) else PoolKind.ONPREM
    return RemoteNode(meta["name"], pool, kind, model, gpus, gpus_used, state, reason)


def pod_nodes(pods: Iterable[Manifest], names: Container[str]) -> dict[str, str]:
    """Pod name -> the node it was scheduled on, for the named pods that have one."""
    out: dict[str, str] = {}
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "")
        node = (pod.get("spec") or {}).get("nodeName")
        if name in names and node:
            out[name] = node
    return out
