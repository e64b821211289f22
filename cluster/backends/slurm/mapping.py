"""Slurm's job and node records in the portal's words (pure, no I/O).

Job states: PENDING and its requeue variants wait; RUNNING and the states a running job passes
through run; COMPLETED succeeds; CANCELLED is cancelled; PREEMPTED, and any end of a job the
portal marked as preempted (its comment ends in `:preempted`), goes back to the portal's queue;
every other end (FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, BOOT_FAIL, DEADLINE) is a failure
whose reason keeps Slurm's word for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cluster.backends.base import RemoteJob, RemoteJobState, RemoteNode
from cluster.backends.slurm.script import PREEMPTED_MARK, portal_id_of
from cluster.states import NodeState, PoolKind

S = RemoteJobState
JOB_STATES: dict[str, RemoteJobState] = {
    "PENDING": S.PENDING,
    "REQUEUED": S.PENDING,
    "REQUEUE_HOLD": S.PENDING,
    "REQUEUE_FED": S.PENDING,
    "RESV_DEL_HOLD": S.PENDING,
    "CONFIGURING": S.RUNNING,
    "RUNNING": S.RUNNING,
    "COMPLETING": S.RUNNING,
    "SIGNALING": S.RUNNING,
    "RESIZING": S.RUNNING,
    "STAGE_OUT": S.RUNNING,
    "SUSPENDED": S.RUNNING,
    "STOPPED": S.RUNNING,
    "COMPLETED": S.SUCCEEDED,
    "CANCELLED": S.CANCELLED,
    "PREEMPTED": S.PREEMPTED,
    "FAILED": S.FAILED,
    "TIMEOUT": S.FAILED,
    "NODE_FAIL": S.FAILED,
    "OUT_OF_MEMORY": S.FAILED,
    "BOOT_FAIL": S.FAILED,
    "DEADLINE": S.FAILED,
    "SPECIAL_EXIT": S.FAILED,
    "REVOKED": S.CANCELLED,
}
# The reason a failed job keeps when Slurm's own state_reason says nothing useful.
END_REASONS = {
    "TIMEOUT": "TimeLimit",
    "NODE_FAIL": "NodeFail",
    "OUT_OF_MEMORY": "OutOfMemory",
    "BOOT_FAIL": "BootFail",
    "DEADLINE": "Deadline",
    "PREEMPTED": "Preempted",
    "FAILED": "NonZeroExitCode",
}
TERMINAL_SLURM = frozenset(k for k, v in JOB_STATES.items() if v not in (S.PENDING, S.RUNNING))
EMPTY_REASONS = frozenset({"", "None"})


def map_state(slurm_state: str, comment: str) -> RemoteJobState:
    base = slurm_state.split()[0].upper() if slurm_state else "PENDING"
    state = JOB_STATES.get(base, S.PENDING if base not in TERMINAL_SLURM else S.FAILED)
    if comment.endswith(PREEMPTED_MARK) and base in TERMINAL_SLURM:
        return S.PREEMPTED
    return state


def exit_code_of(raw: int | None) -> int | None:
    """slurmctld reports a wait status: `code << 8`, or the signal in the low 7 bits (as 128+sig)."""
    if raw is None:
        return None
    if raw & 0x7F:
        return 128 + (raw & 0x7F)
    return raw >> 8


def timestamp(value: Any) -> datetime | None:
    if not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def expand_hostlist(text: str) -> tuple[str, ...]:
    """`gpu-a100-[1-2],gpu-h100-1` -> every node name (Slurm's compressed host lists)."""
    names: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", text or ""):
        if plain:
            names.append(plain)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            for n in range(int(low), int(high or low) + 1):
                names.append(f"{prefix}{str(n).zfill(len(low))}")
    return tuple(names)


def job_reason(base: str, state_reason: str) -> str:
    if state_reason not in EMPTY_REASONS:
        return state_reason
    return END_REASONS.get(base, "")


# `squeue -O` fields as the keys of a slurmrestd job record; times as epoch seconds (SLURM_TIME_FORMAT=%s).
# Fields end in the unit separator, which no name or comment the portal writes contains; the name is last.
SQUEUE_FIELDS = (
    ("JobID", "job_id"), ("State", "job_state"), ("exit_code", "exit_code"), ("StartTime", "start_time"),
    ("EndTime", "end_time"), ("Reason", "state_reason"), ("NodeList", "nodes"), ("Comment", "comment"), ("Name", "name"),
)  # fmt: skip
SQUEUE_SEPARATOR = "\x1f"
SQUEUE_FORMAT = ",".join(f"{field}:{SQUEUE_SEPARATOR}" for field, _ in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1][0]}:"
SQUEUE_NUMBERS = frozenset({"job_id", "exit_code", "start_time", "end_time"})


def squeue_record(line: str, prefix: str) -> dict[str, Any] | None:
    """One line of `squeue -O SQUEUE_FORMAT` as a slurmrestd job record; None if not this portal's job."""
    values = line.split(SQUEUE_SEPARATOR)
    if len(values) != len(SQUEUE_FIELDS) or not values[-1].startswith(f"{prefix}-"):
        return None
    record: dict[str, Any] = {}
    for (_, key), value in zip(SQUEUE_FIELDS, values, strict=True):
        text = value.strip()
        record[key] = (int(text) if text.isdigit() else None) if key in SQUEUE_NUMBERS else text
    if record["job_id"] is None:
        return None
    record["comment"] = "" if record["comment"] == "(null)" else record["comment"]
    return record


def remote_job(job: dict[str, Any], prefix: str) -> RemoteJob | None:
    """A job record of GET /slurm/v0.0.38/jobs; None if this portal did not submit it."""
    portal_id = portal_id_of(str(job.get("name", "")), prefix)
    if portal_id is None:
        return None
    slurm_state = str(job.get("job_state", "PENDING"))
    comment = str(job.get("comment") or "")
    state = map_state(slurm_state, comment)
    ended = state not in (S.PENDING, S.RUNNING)
    return RemoteJob(
        portal_job_id=portal_id,
        backend_job_id=str(job["job_id"]),
        state=state,
        reason="Preempted" if state == S.PREEMPTED else job_reason(slurm_state, str(job.get("state_reason") or "")),
        exit_code=exit_code_of(job.get("exit_code")) if ended else None,
        started_at=timestamp(job.get("start_time")) if state != S.PENDING else None,
        ended_at=timestamp(job.get("end_time")) if ended else None,
        node_names=expand_hostlist(str(job.get("nodes") or "")) if state != S.PENDING else (),
    )


def accounted_job(job: dict[str, Any], prefix: str) -> RemoteJob | None:
    """A job record of GET /slurmdb/v0.0.38/jobs (slurmdbd, for jobs slurmctld has forgotten)."""
    portal_id = portal_id_of(str(job.get("name", "")), prefix)
    if portal_id is None:
        return None
    slurm_state = str((job.get("state") or {}).get("current", "PENDING"))
    comment = str((job.get("comment") or {}).get("job") or "")
    state = map_state(slurm_state, comment)
    times = job.get("time") or {}
    ended = state not in (S.PENDING, S.RUNNING)
    return RemoteJob(
        portal_job_id=portal_id,
        backend_job_id=str(job["job_id"]),
        state=state,
        reason="Preempted"
        if state == S.PREEMPTED
        else job_reason(slurm_state, str((job.get("state") or {}).get("reason") or "")),
        exit_code=accounted_exit_code(job) if ended else None,
        started_at=timestamp(times.get("start")) if state != S.PENDING else None,
        ended_at=timestamp(times.get("end")) if ended else None,
        node_names=expand_hostlist(str(job.get("nodes") or "")) if state != S.PENDING else (),
    )


def accounted_exit_code(job: dict[str, Any]) -> int | None:
    """slurmdbd keeps the script's exit code on the batch step; the job's own is often 0."""
    codes = [job.get("exit_code")] + [step.get("exit_code") for step in job.get("steps") or []]
    worst: int | None = None
    for code in codes:
        if not isinstance(code, dict):
            continue
        signal = (code.get("signal") or {}).get("signal_id")
        value = 128 + int(signal) if isinstance(signal, int) and signal > 0 else code.get("return_code")
        if isinstance(value, int) and (worst is None or value > worst):
            worst = value
    return worst


# --- nodes -------------------------------------------------------------------------------------

GRES_TYPED = re.compile(r"gpu:([A-Za-z0-9_.-]+):(\d+)")
GRES_SHARD = re.compile(r"(?<![A-Za-z0-9_])shard(?::[A-Za-z0-9_.-]+)?:(\d+)")
# A power-save node is down to the portal until its instance has registered (nothing may be placed there).
DOWN_WORDS = frozenset(
    {"DOWN", "FAIL", "FAILING", "NOT_RESPONDING", "UNKNOWN", "INVAL", "FUTURE"}
    | {"POWERED_DOWN", "POWER_UP", "POWERING_UP", "POWER_DOWN", "POWERING_DOWN"}
)
CORDON_PREFIX = "cordoned: "


def gpus_of(gres: str) -> tuple[str, int]:
    """`gpu:a100:8(S:0)` -> ("a100", 8); several entries add up; no GPU -> ("", 0).

    A node that offers shards (`gpu:l4:4,shard:16`) is a node of time-sliced GPUs to the portal:
    ("l4-shared", 16). MIG slices are GPUs typed by their model (`gpu:a100-1g.10gb:28`)."""
    total, model = 0, ""
    for found_model, count in GRES_TYPED.findall(gres or ""):
        model = model or found_model
        total += int(count)
    shards = sum(int(count) for count in GRES_SHARD.findall(gres or ""))
    if shards and model:
        return f"{model}-shared", shards
    return model, total


def node_state(state: str, flags: list[str], reason: str) -> str:
    words = {state.upper(), *(f.upper() for f in flags)}
    if words & DOWN_WORDS:
        return NodeState.DOWN
    if words & {"DRAIN", "DRAINING", "DRAINED"}:
        return NodeState.CORDONED if reason.startswith(CORDON_PREFIX) else NodeState.DRAINING
    return NodeState.READY


class Power:
    """Where a power-save (State=CLOUD) node is in its cycle, in the portal's words."""

    OFF = "off"  # powered down: no instance; the slot may be resumed
    RESUMING = "resuming"  # ResumeProgram ran; waiting for the instance's slurmd to register
    ON = "on"
    SUSPENDING = "suspending"  # SuspendProgram ran; the slot is off after SuspendTimeout
    DOWN = "down"  # not powered down, yet not responding: the resume failed (ResumeTimeout)


@dataclass(frozen=True)
class PowerSlot:
    """A power-save node of slurm.conf, its partitions and its power state."""

    name: str
    partitions: tuple[str, ...]
    gpu_model: str
    gpus: int
    power: str
    reason: str = ""


def power_slot(node: dict[str, Any]) -> PowerSlot | None:
    """The node's power state if it is a power-save node (its flags say CLOUD or POWER...), else None.

    Slurm 22.05's words: POWER_UP and POWER_DOWN are requested, POWERING_UP and POWERING_DOWN under
    way, POWERED_DOWN off; a resume that timed out leaves the node DOWN (and POWERED_DOWN).
    """
    base = str(node.get("state") or "").upper()
    words = {base, *(str(f).upper() for f in node.get("state_flags") or [])}
    if not words & {"CLOUD", "POWERED_DOWN", "POWERING_UP", "POWERING_DOWN", "POWER_DOWN", "POWER_UP"}:
        return None
    if words & {"POWERING_DOWN", "POWER_DOWN"}:
        power = Power.SUSPENDING
    elif words & {"POWERING_UP", "POWER_UP"}:
        power = Power.RESUMING
    elif base == "DOWN" or words & {"NOT_RESPONDING", "FAIL"}:
        power = Power.DOWN
    elif "POWERED_DOWN" in words:
        power = Power.OFF
    else:
        power = Power.ON
    model, gpus = gpus_of(str(node.get("gres") or ""))
    partitions = tuple(str(p) for p in node.get("partitions") or [])
    return PowerSlot(str(node["name"]), partitions, model, gpus, power, str(node.get("reason") or ""))


def remote_node(node: dict[str, Any], cloud_partitions: frozenset[str]) -> RemoteNode:
    """A node of GET /slurm/v0.0.38/nodes. Its pool is its first partition (one partition per GPU pool)."""
    model, gpus = gpus_of(str(node.get("gres") or ""))
    _, used = gpus_of(str(node.get("gres_used") or ""))
    partitions = [str(p) for p in node.get("partitions") or []]
    pool = partitions[0] if partitions else model or "default"
    reason = str(node.get("reason") or "")
    return RemoteNode(
        name=str(node["name"]),
        pool=pool,
        pool_kind=PoolKind.CLOUD if pool in cloud_partitions else PoolKind.ONPREM,
        gpu_model=model,
        gpus=gpus,
        gpus_used=used,
        state=node_state(str(node.get("state") or ""), list(node.get("state_flags") or []), reason),
        reason=reason.removeprefix(CORDON_PREFIX) or _power_reason(node),
    )


def _power_reason(node: dict[str, Any]) -> str:
    slot = power_slot(node)
    return "" if slot is None or slot.power == Power.ON else f"power save: {slot.power}"
