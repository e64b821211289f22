"""Slurm job and node records in the portal's words (pure: no Slurm needed)."""

from __future__ import annotations

import pytest

from cluster.backends.base import BackendRejected, BackendUnavailable, RemoteJobState
from cluster.backends.slurm.mapping import (
    SQUEUE_SEPARATOR,
    Power,
    PowerSlot,
    accounted_job,
    exit_code_of,
    expand_hostlist,
    map_state,
    power_slot,
    remote_job,
    remote_node,
    squeue_record,
)
from cluster.backends.slurm.rest import raise_for_errors
from cluster.states import NodeState, PoolKind

S = RemoteJobState


@pytest.mark.parametrize(
    ("slurm", "portal"),
    [
        ("PENDING", S.PENDING), ("REQUEUED", S.PENDING), ("RUNNING", S.RUNNING), ("COMPLETING", S.RUNNING),
        ("COMPLETED", S.SUCCEEDED), ("FAILED", S.FAILED), ("CANCELLED", S.CANCELLED), ("TIMEOUT", S.FAILED),
        ("PREEMPTED", S.PREEMPTED), ("NODE_FAIL", S.FAILED), ("OUT_OF_MEMORY", S.FAILED), ("BOOT_FAIL", S.FAILED),
        ("CANCELLED by 0", S.CANCELLED),
    ],
)  # fmt: skip
def test_slurm_states_map_onto_portal_states(slurm: str, portal: RemoteJobState) -> None:
    assert map_state(slurm, "portal-1") == portal


def test_any_end_of_a_job_marked_preempted_is_a_preemption() -> None:
    for end in ("COMPLETED", "CANCELLED", "FAILED"):
        assert map_state(end, "portal-1:preempted") == S.PREEMPTED
    assert map_state("RUNNING", "portal-1:preempted") == S.RUNNING


def test_wait_statuses_become_exit_codes() -> None:
    assert exit_code_of(0) == 0
    assert exit_code_of(7 << 8) == 7
    assert exit_code_of(9) == 137  # killed by SIGKILL
    assert exit_code_of(None) is None


def test_a_timed_out_job_keeps_its_reason_and_nodes() -> None:
    job = remote_job(
        {"job_id": 5, "name": "portal-3", "job_state": "TIMEOUT", "state_reason": "None", "exit_code": 15,
         "start_time": 100, "end_time": 200, "nodes": "gpu-a100-[1-2]", "comment": "portal-3"},
        "portal",
    )  # fmt: skip
    assert job is not None
    assert (job.portal_job_id, job.backend_job_id, job.state, job.reason) == (3, "5", S.FAILED, "TimeLimit")
    assert job.exit_code == 143 and job.node_names == ("gpu-a100-1", "gpu-a100-2")


def test_other_jobs_on_the_cluster_are_ignored() -> None:
    assert remote_job({"job_id": 1, "name": "interactive", "job_state": "RUNNING"}, "portal") is None


def test_accounting_records_take_the_exit_code_of_the_batch_step() -> None:
    record = {
        "job_id": 8, "name": "portal-4", "state": {"current": "FAILED", "reason": "None"},
        "exit_code": {"status": "SUCCESS", "return_code": 0}, "comment": {"job": "portal-4"},
        "steps": [{"exit_code": {"status": "FAILED", "return_code": 3}}], "time": {"start": 10, "end": 20}, "nodes": "gpu-h100-1",
    }  # fmt: skip
    job = accounted_job(record, "portal")
    assert job is not None and job.state == S.FAILED and job.exit_code == 3 and job.reason == "NonZeroExitCode"


def test_host_lists_expand() -> None:
    assert expand_hostlist("gpu-a100-[1-2],gpu-h100-1") == ("gpu-a100-1", "gpu-a100-2", "gpu-h100-1")
    assert expand_hostlist("n[08-10]") == ("n08", "n09", "n10")
    assert expand_hostlist("") == ()


@pytest.mark.parametrize(
    ("state", "flags", "reason", "expected"),
    [
        ("IDLE", [], "", NodeState.READY),
        ("MIXED", ["DRAIN"], "swap a fan", NodeState.DRAINING),
        ("IDLE", ["DRAIN"], "cordoned: thermal", NodeState.CORDONED),
        ("DOWN", ["NOT_RESPONDING"], "", NodeState.DOWN),
        ("IDLE", ["NOT_RESPONDING"], "", NodeState.DOWN),
    ],
)
def test_node_states(state: str, flags: list[str], reason: str, expected: NodeState) -> None:
    node = remote_node(
        {"name": "gpu-a100-1", "state": state, "state_flags": flags, "reason": reason, "partitions": ["a100"],
         "gres": "gpu:a100:8(S:0)", "gres_used": "gpu:a100:3(IDX:0-2)"},
        frozenset(),
    )  # fmt: skip
    assert node.state == expected and node.pool == "a100" and (node.gpus, node.gpus_used) == (8, 3)
    assert not node.reason.startswith("cordoned:")


# Power-save (State=CLOUD) nodes as slurmrestd 22.05 listed them on the dev cluster through a cycle:
# off, resume requested, resuming, up, drained and power-down requested, powering down, resume timed out.
@pytest.mark.parametrize(
    ("state", "flags", "power", "portal"),
    [
        ("idle", ["CLOUD", "POWERED_DOWN"], Power.OFF, NodeState.DOWN),
        ("idle", ["CLOUD", "POWER_UP"], Power.RESUMING, NodeState.DOWN),
        ("idle", ["CLOUD", "NOT_RESPONDING", "POWERING_UP"], Power.RESUMING, NodeState.DOWN),
        ("down", ["CLOUD", "NOT_RESPONDING", "POWERING_UP"], Power.RESUMING, NodeState.DOWN),
        ("idle", ["CLOUD"], Power.ON, NodeState.READY),
        ("idle", ["CLOUD", "DRAIN", "POWER_DOWN"], Power.SUSPENDING, NodeState.DOWN),
        ("idle", ["CLOUD", "POWERING_DOWN"], Power.SUSPENDING, NodeState.DOWN),
        ("down", ["CLOUD", "POWERED_DOWN", "NOT_RESPONDING"], Power.DOWN, NodeState.DOWN),
    ],
)
def test_power_save_nodes(state: str, flags: list[str], power: str, portal: NodeState) -> None:
    raw = {"name": "burst-a10g-1", "state": state, "state_flags": flags, "reason": "", "partitions": ["burst-a10g"],
           "gres": "gpu:a10g:4", "gres_used": "gpu:a10g:0(IDX:N/A)"}  # fmt: skip
    assert power_slot(raw) == PowerSlot("burst-a10g-1", ("burst-a10g",), "a10g", 4, power)
    node = remote_node(raw, frozenset({"burst-a10g"}))
    assert (node.pool_kind, node.state) == (PoolKind.CLOUD, portal)
    assert node.reason == ("" if power == Power.ON else f"power save: {power}")


def test_nodes_without_power_saving_have_no_power_slot() -> None:
    assert power_slot({"name": "gpu-a100-1", "state": "idle", "state_flags": ["DRAIN"], "gres": "gpu:a100:8"}) is None


def test_errors_say_whether_a_retry_can_help() -> None:
    with pytest.raises(BackendUnavailable):
        raise_for_errors(500, {"errors": [{"error_number": 1001, "description": "Unable to contact slurm controller"}]}, "x")
    with pytest.raises(BackendUnavailable):
        raise_for_errors(503, {}, "x")
    with pytest.raises(BackendRejected, match="Invalid account"):
        raise_for_errors(500, {"errors": [{"error_number": 2045, "description": "Invalid account or account/partition"}]}, "x")
    raise_for_errors(200, {"errors": []}, "x")


def squeue_line(*fields: str) -> str:
    return SQUEUE_SEPARATOR.join(fields)


def test_an_squeue_line_reads_like_the_rest_record_of_the_same_job() -> None:
    line = squeue_line("204", "TIMEOUT", "15", "1796497992", "1796498062", "TimeLimit", "gpu-a100-[1-2]", "portal-4", "portal-4")
    job = remote_job(squeue_record(line, "portal") or {}, "portal")
    assert job is not None and job.portal_job_id == 4 and job.backend_job_id == "204"
    assert (job.state, job.reason, job.exit_code) == (S.FAILED, "TimeLimit", 143)
    assert job.node_names == ("gpu-a100-1", "gpu-a100-2")
    assert job.ended_at is not None and int(job.ended_at.timestamp()) == 1796498062


def test_squeue_lines_of_other_jobs_or_broken_lines_are_skipped() -> None:
    pending = squeue_line("9", "PENDING", "0", "N/A", "N/A", "Priority", "", "(null)", "portal-7")
    record = squeue_record(pending, "portal")
    assert record is not None and record["start_time"] is None and record["comment"] == ""
    assert squeue_record(pending.replace("portal-7", "other-7"), "portal") is None
    assert squeue_record(squeue_line("9", "PENDING", "portal-7"), "portal") is None
    assert squeue_record(pending.replace("9", "x", 1), "portal") is None
