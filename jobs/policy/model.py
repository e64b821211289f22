"""Plain data the admission policy reads and returns: cluster, quotas, jobs, decisions.

Every type is frozen: a cycle never mutates its inputs, so the same snapshot can be replayed,
compared and benchmarked. Times are seconds on whatever clock the caller uses; the policy never
reads a clock itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

JobId = int | str


class Reason(StrEnum):
    """Why a job is still waiting, in the words shown to its owner."""

    QUOTA = "quota"
    CAPACITY = "capacity"
    FRAGMENTATION = "fragmentation"
    PRIORITY = "priority"
    BUDGET = "budget"
    GANG = "gang"
    QUEUE = "queue"
    NO_NODES = "no_nodes"


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node as the cluster reports it: `free` GPUs are those no running job holds."""

    name: str
    pool: str
    gpu_model: str
    gpus: int
    free: int
    healthy: bool = True
    is_cloud: bool = False


@dataclass(frozen=True, slots=True)
class Cluster:
    """The nodes of every pool. Unhealthy (cordoned, drained, failed) nodes take no new work.

    `pool_teams` names pools only some teams may use (a burst another team's policy paid for): no
    other team's job is placed, reserved or reclaims there."""

    nodes: Sequence[NodeState]
    pool_teams: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Quota:
    """A team's queue for one GPU model.

    `guarantee` GPUs the team can always get back (by reclaim if others borrowed them), `limit` is
    the hard cap with borrowing included, `weight` its share of idle capacity, and `lendable` says
    whether others may borrow its idle guarantee. A team in a `department` lends first inside it:
    an unlendable guarantee is still lent to the department's other teams, and a reclaim takes
    GPUs back from borrowers outside the department before those inside it.
    """

    team: str
    gpu_model: str
    guarantee: int
    limit: int
    weight: float = 1.0
    lendable: bool = True
    department: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.guarantee <= self.limit:
            raise ValueError(f"quota {self.team}/{self.gpu_model}: need 0 <= guarantee <= limit")
        if self.weight <= 0:
            raise ValueError(f"quota {self.team}/{self.gpu_model}: weight must be positive")


@dataclass(frozen=True, slots=True)
class PriorityClassSpec:
    """A priority class: higher `rank` goes first.

    `preemptible` jobs may be reclaim victims while their team borrows; `may_borrow` jobs may run
    beyond their team's guarantee (up to its limit).
    """

    name: str
    rank: int
    preemptible: bool
    may_borrow: bool


CRITICAL = PriorityClassSpec("critical", rank=300, preemptible=False, may_borrow=False)
STANDARD = PriorityClassSpec("standard", rank=200, preemptible=True, may_borrow=True)
PREEMPTIBLE = PriorityClassSpec("preemptible", rank=100, preemptible=True, may_borrow=True)
DEFAULT_CLASSES: tuple[PriorityClassSpec, ...] = (CRITICAL, STANDARD, PREEMPTIBLE)


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job asking for `nodes` x `gpus_per_node` GPUs of one model, all at once (a gang)."""

    id: JobId
    team: str
    gpu_model: str
    gpus_per_node: int
    nodes: int
    priority: str
    submit_time: float
    walltime_s: float
    held: bool = False
    # When the job would start under strict FIFO over the same arrivals (jobs.policy.shadow); None:
    # not known. Read only with `PolicyConfig.fifo_bound`.
    fifo_start: float | None = None

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job holding GPUs. `last_checkpoint` may be left out: it is then derived from the interval."""

    id: JobId
    team: str
    gpu_model: str
    placement: Mapping[str, int]
    priority: str
    start_time: float
    expected_end: float
    checkpoint_interval_s: float | None = None
    last_checkpoint: float | None = None
    fifo_start: float | None = None  # as PendingJob.fifo_start: when strict FIFO would have started it
    # Marked reclaimable by the telemetry guard (its GPUs stayed idle past the warning): the first
    # reclaim victim, and a victim even while its team is within its guarantee.
    idle: bool = False

    @property
    def gpus(self) -> int:
        return sum(self.placement.values())

    def checkpointed_at(self, now: float) -> float:
        """When its last checkpoint was written; without checkpoints, everything since start is at stake."""
        if self.last_checkpoint is not None:
            return min(self.last_checkpoint, now)
        interval = self.checkpoint_interval_s
        if not interval or now <= self.start_time:
            return self.start_time
        return self.start_time + math.floor((now - self.start_time) / interval) * interval

    def lost_work(self, now: float) -> float:
        """GPU-seconds of progress a preemption at `now` would throw away."""
        return max(0.0, now - self.checkpointed_at(now)) * self.gpus


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Knobs of the fair policy. The defaults suit a shared research grid."""

    half_life_s: float = 7 * 24 * 3600.0  # as Slurm's PriorityDecayHalfLife default
    min_victim_runtime_s: float = 900.0  # a job must run this long before it can be reclaimed
    starvation_age_s: float = 24 * 3600.0  # a job waiting this long goes by age, ahead of fair share
    max_reclaims_per_cycle: int = 4  # small preemption waves; the rest waits for the next cycle
    backfill: bool = True
    # A blocked job waiting this long gets a reservation of its own even where its pool already has
    # one (None: only each pool's first blocked job gets one).
    reserve_after_s: float | None = None
    reserve_oldest: int = 0  # ... and so do the this many oldest pending jobs, whatever their wait
    # Such jobs keep last cycle's reservation (its nodes; run_cycle's `previous`) until they start.
    keep_reservations: bool = False
    # The starvation age of a cycle is at most this many times the median age of its pending jobs
    # (None: always starvation_age_s), so that a job waiting far longer than is usual goes by age.
    starvation_relative: float | None = None
    # The this many oldest pending jobs always go by age, ahead of fair share, as at the head of a
    # FIFO queue (0: none).
    fifo_head: int = 0
    fifo_head_after_s: float = 0.0  # ... once they have waited this long
    # A job's fair share counts for 1 / (1 + wait / aging_s) of itself (None: no aging), so that
    # a job of a team with much usage comes forward as it waits.
    aging_s: float | None = None
    # A job still waiting `fifo_bound_lead_s` before its FIFO start (`PendingJob.fifo_start`) is due:
    # it goes by age ahead of fair share, and gets and keeps a reservation of its own, so that no job
    # waits much longer than strict FIFO would have made it wait.
    fifo_bound: bool = False
    fifo_bound_lead_s: float = 0.0
    # Only the this many due jobs that FIFO would have started first get reservations of their own
    # (the rest still go by age); each one drains nodes, so many of them drain the grid as FIFO does.
    fifo_bound_reservations: int = 1_000_000
    # A running job that would be due were it pending (strict FIFO would have started it by now) is
    # no reclaim victim: requeued, it would wait again, past its FIFO bound.
    fifo_bound_shields: bool = False
    explain: bool = True  # False skips details, positions and estimates (the replay's fast path)
    classes: tuple[PriorityClassSpec, ...] = DEFAULT_CLASSES

    def class_named(self, name: str) -> PriorityClassSpec:
        for spec in self.classes:
            if spec.name == name:
                return spec
        raise KeyError(f"unknown priority class {name!r}")


@dataclass(frozen=True, slots=True)
class Admission:
    """Start `job_id` on `placement` ({node: GPUs}) in `pool`; dispatch only after `preempts` have stopped."""

    job_id: JobId
    pool: str
    placement: Mapping[str, int]
    borrowing: bool = False
    preempts: tuple[JobId, ...] = ()


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop `job_id` (it resumes from its last checkpoint) so that `for_job` gets its guarantee back."""

    job_id: JobId
    reason: str
    for_job: JobId
    lost_gpu_s: float


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a job waits, where it stands, and when it may start (None: no estimate can be given)."""

    reason: Reason
    detail: str
    team_position: int | None
    pool_position: int | None
    estimated_start: float | None


# An explanation as the cycle keeps it: (reason, detail, team position, pool position, estimated start).
ExplanationRow = tuple[Reason, str, int | None, int | None, float | None]


class Explanations(MutableMapping[JobId, Explanation]):
    """Waiting jobs' explanations, kept as plain rows and made `Explanation`s only when read.

    A busy cycle explains ten thousand jobs, most of them exactly as the cycle before; readers that
    compare or store them take `rows` as they are, and the objects are built for those looked at.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: dict[JobId, ExplanationRow] | None = None) -> None:
        self.rows: dict[JobId, ExplanationRow] = {} if rows is None else rows

    def __getitem__(self, job_id: JobId) -> Explanation:
        return Explanation(*self.rows[job_id])

    def __setitem__(self, job_id: JobId, explanation: Explanation) -> None:
        e = explanation
        self.rows[job_id] = (e.reason, e.detail, e.team_position, e.pool_position, e.estimated_start)

    def __delitem__(self, job_id: JobId) -> None:
        del self.rows[job_id]

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.rows

    def __iter__(self) -> Iterator[JobId]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"Explanations({self.rows!r})"


@dataclass(frozen=True, slots=True)
class Reservation:
    """Nodes held for the top blocked job of a pool; only jobs ending before `start` may use them."""

    pool: str
    job_id: JobId
    nodes: tuple[str, ...]
    start: float
    rank: int


@dataclass(frozen=True, slots=True)
class CycleResult:
    """The decisions of one admission cycle."""

    admitted: list[Admission] = field(default_factory=list)
    preempted: list[Preemption] = field(default_factory=list)
    waiting: Explanations = field(default_factory=Explanations)
    reservations: list[Reservation] = field(default_factory=list)
