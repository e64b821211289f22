"""The admission policy as a pure core: plain frozen data in, decisions out; no ORM, clock or I/O.

`run_cycle` is the fair policy (classes, weighted fair share, gangs, backfill with reservations,
borrowing and reclaim); `fifo_cycle` is the strict FIFO baseline and `FifoShadow` its schedule kept on the side (the fair
policy's bound on the worst wait); `violations` checks a cycle's
decisions against the grid's invariants; `jobs.policy.replay` replays a job trace through either.
"""

from jobs.policy.cycle import run_cycle
from jobs.policy.fairshare import advance_usage, decay_factor, with_idle_penalty
from jobs.policy.fifo import fifo_cycle
from jobs.policy.invariants import violations
from jobs.policy.model import (
    CRITICAL,
    DEFAULT_CLASSES,
    PREEMPTIBLE,
    STANDARD,
    Admission,
    Cluster,
    CycleResult,
    Explanation,
    ExplanationRow,
    Explanations,
    JobId,
    NodeState,
    PendingJob,
    PolicyConfig,
    Preemption,
    PriorityClassSpec,
    Quota,
    Reason,
    Reservation,
    RunningJob,
)
from jobs.policy.shadow import FifoShadow

__all__ = [
    "CRITICAL",
    "DEFAULT_CLASSES",
    "PREEMPTIBLE",
    "STANDARD",
    "Admission",
    "Cluster",
    "CycleResult",
    "Explanation",
    "ExplanationRow",
    "Explanations",
    "FifoShadow",
    "JobId",
    "NodeState",
    "PendingJob",
    "PolicyConfig",
    "Preemption",
    "PriorityClassSpec",
    "Quota",
    "Reason",
    "Reservation",
    "RunningJob",
    "advance_usage",
    "decay_factor",
    "fifo_cycle",
    "run_cycle",
    "violations",
    "with_idle_penalty",
]
