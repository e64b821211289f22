"""The burst planner: waiting demand + instance catalogue + policy -> the cheapest proposal.

Pure: no ORM, no clock, no I/O. The service layer hands in plain data and stores what comes back,
so the same inputs always give the same proposal, and 10,000 waiting jobs can be planned in a
benchmark without a database.

How a proposal is chosen:
- Jobs of teams the policy leaves out (budget forbids bursts, team not allowed) are set aside
  with the reason, and never counted.
- For each candidate instance type, the eligible jobs (the type's GPU model is one they accept,
  and one node holds a gang member's GPUs) are packed oldest first onto nodes of that type, best
  fit, each gang on distinct nodes, never beyond the policy's maximum node count.
- The type that starts the most waiting GPUs wins; among equals, the lowest projected cost, then
  the fewest nodes, then the name (so ties are stable).
- The projection is nodes x hours x price per hour, where hours is the burst duration: the
  longest walltime among the jobs it starts, capped at the policy's maximum. It is an upper
  bound: idle nodes are released earlier. Per team, a job costs its GPU-hours at the type's price
  per GPU; what no job uses is shown as idle capacity, so teams + idle = total, to the cent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

CENT = Decimal("0.01")
SECONDS_PER_HOUR = 3600
MAX_GPUS_PER_NODE = 16


class PlanError(ValueError):
    """The planner's input is invalid; `field` names what is wrong."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True, slots=True)
class WaitingJob:
    """One waiting job: a gang of `nodes` members with `gpus_per_node` GPUs each."""

    id: int
    team: str
    gpu_models: frozenset[str]  # the models it accepts
    gpus_per_node: int
    nodes: int
    walltime_s: int
    wait_s: float = 0.0

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass(frozen=True, slots=True)
class InstanceOffer:
    """A cloud instance type: its GPUs, their model, and the price of one node for one hour."""

    name: str
    gpu_model: str
    gpus: int
    price_per_hour: Decimal

    def __post_init__(self) -> None:
        if not 1 <= self.gpus <= MAX_GPUS_PER_NODE:
            raise PlanError("gpus", f"instance type {self.name}: must be 1-{MAX_GPUS_PER_NODE}, got {self.gpus}")
        if self.price_per_hour <= 0:
            raise PlanError("price_per_hour", f"instance type {self.name}: must be positive")


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """The parts of a burst policy the planner needs."""

    min_nodes: int
    max_nodes: int
    max_duration_s: int
    allowed_teams: frozenset[str] = frozenset()  # empty: every team may burst

    def __post_init__(self) -> None:
        if not 0 <= self.min_nodes <= self.max_nodes:
            raise PlanError("min_nodes", f"need 0 <= min_nodes <= max_nodes, got {self.min_nodes} and {self.max_nodes}")
        if self.max_nodes < 1:
            raise PlanError("max_nodes", "must be at least 1")
        if self.max_duration_s < 60:
            raise PlanError("max_duration_s", "must be at least 60 seconds")


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    """When a queue is worth a burst: this many GPUs waiting, or the oldest job waiting this long (0: off)."""

    pending_gpus: int
    oldest_wait_s: float


@dataclass(frozen=True, slots=True)
class Option:
    """What one instance type would do for the demand."""

    instance_type: str
    nodes: int
    gpus_started: int
    jobs_started: int
    duration_s: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class TeamShare:
    """A team's part of the projection: its jobs started and their cost."""

    team: str
    jobs: int
    gpus: int
    gpu_hours: Decimal
    cost: Decimal


@dataclass(frozen=True, slots=True)
class Excluded:
    """Waiting work left out of the proposal, and why."""

    team: str
    reason: str
    jobs: int
    gpus: int


@dataclass(frozen=True)
class Proposal:
    """The cheapest way found to start the waiting jobs, with its cost projection."""

    instance_type: str
    gpu_model: str
    gpus_per_node: int
    price_per_hour: Decimal
    nodes: int
    duration_s: int
    cost: Decimal
    job_ids: tuple[int, ...]
    gpus_started: int
    teams: tuple[TeamShare, ...]
    idle_cost: Decimal
    excluded: tuple[Excluded, ...]
    not_started: tuple[Excluded, ...]
    alternatives: tuple[Option, ...] = field(default=())

    @property
    def hours(self) -> Decimal:
        return (Decimal(self.duration_s) / SECONDS_PER_HOUR).quantize(CENT, rounding=ROUND_HALF_EVEN)


def money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def projected_cost(nodes: int, duration_s: int, price_per_hour: Decimal) -> Decimal:
    """nodes x hours x price, rounded once to the cent."""
    return money(Decimal(nodes * duration_s) * price_per_hour / SECONDS_PER_HOUR)


def trigger_reason(pending_gpus: int, oldest_wait_s: float, trigger: TriggerPolicy) -> str:
    """Why the queue warrants a burst, or "" if it does not."""
    if trigger.pending_gpus > 0 and pending_gpus >= trigger.pending_gpus:
        return f"{pending_gpus} GPUs waiting (threshold {trigger.pending_gpus})"
    if trigger.oldest_wait_s > 0 and oldest_wait_s >= trigger.oldest_wait_s:
        return f"oldest job waiting {oldest_wait_s / 60:.0f} min (threshold {trigger.oldest_wait_s / 60:.0f} min)"
    return ""


# --- who is left out -------------------------------------------------------------------------


def split_by_team(
    jobs: Iterable[WaitingJob], policy: PlanPolicy, denied: Mapping[str, str]
) -> tuple[list[WaitingJob], tuple[Excluded, ...]]:
    """The jobs that may burst, and a summary of those that may not (per team, with the reason)."""
    kept: list[WaitingJob] = []
    left_out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for job in jobs:
        reason = denied.get(job.team) or (
            "the burst policy does not include this team" if policy.allowed_teams and job.team not in policy.allowed_teams else ""
        )
        if reason:
            tally = left_out[(job.team, reason)]
            tally[0] += 1
            tally[1] += job.gpus
        else:
            kept.append(job)
    return kept, tuple(Excluded(team, reason, n, g) for (team, reason), (n, g) in sorted(left_out.items()))


# --- packing ---------------------------------------------------------------------------------


@dataclass
class _Packing:
    """Nodes of one instance type as counts per free-GPU amount (nodes are interchangeable)."""

    gpus: int
    max_nodes: int
    free: list[int]  # free[f] = open nodes with f GPUs free
    opened: int = 0

    def place(self, gpus_per_node: int, members: int) -> bool:
        """Put a gang on `members` distinct nodes, best fit first, opening nodes if allowed."""
        taken: list[int] = []  # the free amount of each node chosen
        need = members
        for f in range(gpus_per_node, self.gpus):  # partly used nodes, tightest first
            n = self.free[f]
            if n:
                k = n if n < need else need
                taken.extend([f] * k)
                need -= k
                if not need:
                    break
        if need:
            spare = self.free[self.gpus] + (self.max_nodes - self.opened)
            if spare < need:
                return False
            from_open = min(self.free[self.gpus], need)
            taken.extend([self.gpus] * from_open)
            fresh = need - from_open
            self.free[self.gpus] += fresh
            self.opened += fresh
            taken.extend([self.gpus] * fresh)
        for f in taken:
            self.free[f] -= 1
            self.free[f - gpus_per_node] += 1
        return True


@dataclass
class _Packed:
    offer: InstanceOffer
    nodes: int
    started: list[WaitingJob]
    gpus_started: int
    duration_s: int
    cost: Decimal


def pack(offer: InstanceOffer, jobs: Sequence[WaitingJob], policy: PlanPolicy) -> _Packed:
    """Pack the jobs this type can run, oldest first, within the policy's node limit."""
    packing = _Packing(offer.gpus, policy.max_nodes, [0] * (offer.gpus + 1))
    started: list[WaitingJob] = []
    refused: set[tuple[int, int]] = set()  # free space only shrinks: a shape refused once is refused again
    gpus_started = 0
    longest = 0
    for job in jobs:
        if offer.gpu_model not in job.gpu_models or job.gpus_per_node > offer.gpus:
            continue
        shape = (job.gpus_per_node, job.nodes)
        if shape in refused:
            continue
        if packing.place(*shape):
            started.append(job)
            gpus_started += job.gpus
            longest = max(longest, job.walltime_s)
        else:
            refused.add(shape)
    nodes = max(packing.opened, policy.min_nodes) if started else 0
    duration = min(longest, policy.max_duration_s)
    return _Packed(offer, nodes, started, gpus_started, duration, projected_cost(nodes, duration, offer.price_per_hour))


def _better(a: _Packed, b: _Packed) -> bool:
    """Does `a` beat `b`: more GPUs started, then cheaper, then fewer nodes, then by name."""
    return (-a.gpus_started, a.cost, a.nodes, a.offer.name) < (-b.gpus_started, b.cost, b.nodes, b.offer.name)


# --- the projection --------------------------------------------------------------------------


def team_shares(packed: _Packed) -> tuple[tuple[TeamShare, ...], Decimal]:
    """Each team's GPU-hours at the type's price per GPU-hour, and the idle rest of the total."""
    gpu_seconds: dict[str, int] = defaultdict(int)
    jobs: dict[str, int] = defaultdict(int)
    gpus: dict[str, int] = defaultdict(int)
    for job in packed.started:
        gpu_seconds[job.team] += job.gpus * min(job.walltime_s, packed.duration_s)
        jobs[job.team] += 1
        gpus[job.team] += job.gpus
    per_gpu_second = packed.offer.price_per_hour / packed.offer.gpus / SECONDS_PER_HOUR
    shares = tuple(
        TeamShare(
            team,
            jobs[team],
            gpus[team],
            (Decimal(gpu_seconds[team]) / SECONDS_PER_HOUR).quantize(CENT, rounding=ROUND_HALF_EVEN),
            money(gpu_seconds[team] * per_gpu_second),
        )
        for team in sorted(gpu_seconds)
    )
    return shares, packed.cost - sum((s.cost for s in shares), Decimal("0.00"))


def not_started(jobs: Sequence[WaitingJob], started_ids: set[int], offer: InstanceOffer) -> tuple[Excluded, ...]:
    """Eligible-by-team jobs the chosen type does not start, per team, with why."""
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for job in jobs:
        if job.id in started_ids:
            continue
        if offer.gpu_model not in job.gpu_models:
            reason = f"needs {'/'.join(sorted(job.gpu_models))}, not {offer.gpu_model}"
        elif job.gpus_per_node > offer.gpus:
            reason = f"needs {job.gpus_per_node} GPUs on a node; {offer.name} has {offer.gpus}"
        else:
            reason = "beyond the policy's maximum node count"
        entry = tally[(job.team, reason)]
        entry[0] += 1
        entry[1] += job.gpus
    return tuple(Excluded(team, reason, n, g) for (team, reason), (n, g) in sorted(tally.items()))


def plan(
    jobs: Sequence[WaitingJob],
    offers: Sequence[InstanceOffer],
    policy: PlanPolicy,
    denied: Mapping[str, str] | None = None,
) -> Proposal | None:
    """The cheapest proposal that starts the most waiting GPUs, or None if no type starts any job.

    `jobs` should be oldest first (the order they would be admitted); `denied` maps a team to
    why it may not burst (e.g. its budget forbids it).
    """
    if len({o.name for o in offers}) != len(offers):
        raise PlanError("instance_types", "names must be unique")
    eligible, excluded = split_by_team(jobs, policy, denied or {})
    best: _Packed | None = None
    options: list[Option] = []
    for offer in offers:
        packed = pack(offer, eligible, policy)
        options.append(Option(offer.name, packed.nodes, packed.gpus_started, len(packed.started), packed.duration_s, packed.cost))
        if packed.started and (best is None or _better(packed, best)):
            best = packed
    if best is None:
        return None
    shares, idle = team_shares(best)
    return Proposal(
        instance_type=best.offer.name,
        gpu_model=best.offer.gpu_model,
        gpus_per_node=best.offer.gpus,
        price_per_hour=best.offer.price_per_hour,
        nodes=best.nodes,
        duration_s=best.duration_s,
        cost=best.cost,
        job_ids=tuple(j.id for j in best.started),
        gpus_started=best.gpus_started,
        teams=shares,
        idle_cost=idle,
        excluded=excluded,
        not_started=not_started(eligible, {j.id for j in best.started}, best.offer),
        alternatives=tuple(sorted(options, key=lambda o: (-o.gpus_started, o.cost, o.nodes, o.instance_type))),
    )


def approval_cost(price_per_hour: Decimal, proposed_nodes: int, proposed_duration_s: int, nodes: int, duration_s: int) -> Decimal:
    """The projected cost of an approval that may lower the node count or cap the hours."""
    if not 1 <= nodes <= proposed_nodes:
        raise PlanError("nodes", f"must be 1-{proposed_nodes}, got {nodes}")
    if not 60 <= duration_s <= proposed_duration_s:
        hours = Decimal(proposed_duration_s) / SECONDS_PER_HOUR
        raise PlanError("max_hours", f"must be between one minute and the proposed {hours:.2f} hours")
    return projected_cost(nodes, duration_s, price_per_hour)
