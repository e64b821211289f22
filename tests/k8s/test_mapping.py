"""Cluster answers in portal terms: Status errors, job phases and conditions, node states (plain data)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cluster.backends.base import BackendRejected, BackendUnavailable, RemoteJob, RemoteJobState
from cluster.backends.kubernetes import errors, status
from cluster.backends.kubernetes.backend import parse_burst_machinedeployments
from cluster.backends.kubernetes.manifests import JOB_ID_LABEL
from cluster.states import NodeState


def status_body(code: int, reason: str, message: str, causes: list[dict[str, str]] | None = None) -> str:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": reason,
            "message": message,
            "code": code,
            "details": {"causes": causes or []},
        }
    )


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [(401, BackendRejected, False), (403, BackendRejected, False), (404, errors.NotFoundError, False), (409, errors.ConflictError, True),
     (422, BackendRejected, False), (429, errors.TooManyRequests, True), (500, BackendUnavailable, True), (503, BackendUnavailable, True)],
)  # fmt: skip
def test_each_error_answer_has_its_retry_behaviour(code: int, kind: type[Exception], retryable: bool) -> None:
    error = errors.from_status("create Job a/b", errors.parse_status(code, status_body(code, "X", "m")))
    assert isinstance(error, kind) and error.retryable is retryable and str(error).startswith("create Job a/b")


def test_a_422_names_each_field_and_a_403_gives_the_rbac_hint() -> None:
    body = status_body(422, "Invalid", "Job is invalid", [{"field": "spec.minAvailable", "message": "must be >= 0"}])
    assert "spec.minAvailable: must be >= 0" in str(errors.from_status("create", errors.parse_status(422, body)))
    assert "export_cluster_config" in str(
        errors.from_status("list nodes", errors.parse_status(403, status_body(403, "Forbidden", "no")))
    )


def test_a_body_that_is_not_a_status_keeps_the_code() -> None:
    parsed = errors.parse_status(502, "<html>bad gateway</html>")
    assert parsed.code == 502 and isinstance(errors.from_status("x", parsed), BackendUnavailable)


def job(phase: str | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {
            "name": "gp-5",
            "namespace": "team-a",
            "labels": {"portal.gpugrid.io/job-id": "5"} if labels is None else labels,
        }
    }
    if phase:
        obj["status"] = {"state": {"phase": phase, "reason": "R", "message": "M", "lastTransitionTime": "2026-01-02T03:04:05Z"}}
    return obj


@pytest.mark.parametrize(("phase", "state"), [*status.VOLCANO_PHASES.items(), (None, RemoteJobState.PENDING)])
def test_every_volcano_phase_maps_to_a_portal_state(phase: str | None, state: RemoteJobState) -> None:
    remote = status.volcano_remote(job(phase))
    assert remote is not None and remote.state == state and remote.backend_job_id == "jobs/team-a/gp-5"
    assert (remote.ended_at is not None) == (state in status.TERMINAL)


def test_objects_without_a_portal_id_are_not_the_portals() -> None:
    assert status.volcano_remote(job("Running", labels={})) is None


def test_the_decisive_pytorchjob_condition_wins() -> None:
    obj = job()
    obj["status"] = {"conditions": [
        {"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
        {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed", "message": "worker 1 exited 137", "lastTransitionTime": "2026-01-02T03:04:05Z"},
    ]}  # fmt: skip
    remote = status.pytorch_remote(obj)
    assert remote is not None and remote.state == RemoteJobState.FAILED and "exited 137" in remote.reason and remote.ended_at


def test_backend_job_ids_round_trip_and_foreign_ones_are_refused() -> None:
    assert status.split_backend_job_id(status.backend_job_id("pytorchjobs", "team-a", "gp-1")) == (
        "pytorchjobs",
        "team-a",
        "gp-1",
    )
    with pytest.raises(ValueError):
        status.split_backend_job_id("deployments/team-a/web")


def node(**spec: object) -> dict[str, Any]:
    return {
        "metadata": {"name": "n1", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}, "annotations": {}},
        "spec": spec,
        "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_node_states_down_beats_draining_beats_cordoned() -> None:
    assert status.node_state(node()) == (NodeState.READY, "")
    assert status.node_state(node(unschedulable=True))[0] == NodeState.CORDONED
    draining = node(unschedulable=True)
    draining["metadata"]["annotations"] = {status.DRAIN_ANNOTATION: "true", status.CORDON_REASON_ANNOTATION: "swap"}
    assert status.node_state(draining) == (NodeState.DRAINING, "swap")
    draining["status"]["conditions"][0]["status"] = "Unknown"
    assert status.node_state(draining)[0] == NodeState.DOWN
    remote = status.remote_node(node(), 3, "pool", ["burst"])
    assert remote is not None and (remote.gpu_model, remote.gpus, remote.gpus_used, remote.pool) == ("l4", 8, 3, "k8s-l4")


def test_burst_pools_parse_from_the_environment_form() -> None:
    assert parse_burst_machinedeployments("burst-a10g=capi/md-a10g, burst-l4=capi/md-l4") == {
        "burst-a10g": ("capi", "md-a10g"),
        "burst-l4": ("capi", "md-l4"),
    }
    with pytest.raises(ValueError):
        parse_burst_machinedeployments("burst-a10g=md-without-namespace")


def pod(name: str, node: str, *codes: int | None, job: str = "7") -> dict[str, Any]:
    statuses: list[dict[str, Any]] = [
        {"state": {"terminated": {"exitCode": c}} if c is not None else {"running": {}}} for c in codes
    ]
    return {
        "metadata": {"name": name, "labels": {JOB_ID_LABEL: job}},
        "spec": {"nodeName": node},
        "status": {"containerStatuses": statuses},
    }


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([], None),
        ([pod("gp-7-main-0", "n1", None)], None),  # still running: no exit code yet
        ([pod("gp-7-main-0", "n1", 0), pod("gp-7-main-1", "n2", 0)], 0),
        ([pod("gp-7-worker-0", "n2", 137), pod("gp-7-master-0", "n1", 2)], 2),  # the master sorts first
        ([pod("gp-7-master-0", "n1", 0), pod("gp-7-worker-0", "n2", 0, 143)], 143),  # a sidecar's failure counts
    ],
)
def test_a_jobs_exit_code_is_the_first_failure_of_its_pods(pods: list[dict[str, Any]], expected: int | None) -> None:
    assert status.job_exit_code(pods) == expected


def test_pods_give_their_job_nodes_only_once_it_left_pending_and_an_exit_code_once_it_ended() -> None:
    seen = status.pods_by_job([pod("gp-7-a", "n2", 1), pod("gp-7-b", "n1", None), pod("gp-8-a", "n3", 0, job="8")])
    assert seen[7] == status.PodsSeen(("n1", "n2"), 1) and seen[8] == status.PodsSeen(("n3",), 0)
    base = RemoteJob(7, "jobs/team-vision/gp-7", RemoteJobState.PENDING)
    assert status.with_pods(base, seen[7]) == base
    running = status.with_pods(RemoteJob(7, "x", RemoteJobState.RUNNING), seen[7])
    assert (running.node_names, running.exit_code) == (("n1", "n2"), None)
    failed = status.with_pods(RemoteJob(7, "x", RemoteJobState.FAILED), seen[7])
    assert (failed.node_names, failed.exit_code) == (("n1", "n2"), 1)
