"""Who uses whose GPUs right now: pure arithmetic over quotas and use, per GPU model.

A team's use above its guarantee is borrowed. Borrowed GPUs come first from capacity nobody is
guaranteed, then from the idle guarantees of lendable teams, shared out in proportion to what
each has idle. No ORM, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TeamShare:
    team: str
    guarantee: int
    limit: int
    used: int
    lendable: bool = True

    @property
    def within_guarantee(self) -> int:
        return min(self.used, self.guarantee)

    @property
    def borrowing(self) -> int:
        return max(0, self.used - self.guarantee)

    @property
    def idle_guarantee(self) -> int:
        return max(0, self.guarantee - self.used)


@dataclass
class Lending:
    """For one GPU model: what each team borrows from whom (team -> lender -> GPUs, fractional)."""

    borrowed_from: dict[str, dict[str, float]] = field(default_factory=dict)
    lent_to: dict[str, dict[str, float]] = field(default_factory=dict)
    from_unguaranteed: dict[str, float] = field(default_factory=dict)


def lending(shares: list[TeamShare], capacity: int) -> Lending:
    result = Lending()
    unguaranteed = max(0, capacity - sum(s.guarantee for s in shares))
    borrowers = {s.team: s.borrowing for s in shares if s.borrowing}
    total_borrowed = sum(borrowers.values())
    from_pool = min(unguaranteed, total_borrowed)
    from_lenders = total_borrowed - from_pool
    lenders: Mapping[str, int] = {s.team: s.idle_guarantee for s in shares if s.lendable and s.idle_guarantee}
    idle_total = sum(lenders.values())
    for team, amount in borrowers.items():
        part = amount / total_borrowed
        result.from_unguaranteed[team] = from_pool * part
        sources = {
            lender: from_lenders * part * idle / idle_total for lender, idle in lenders.items() if idle_total and lender != team
        }
        result.borrowed_from[team] = {k: v for k, v in sources.items() if v > 0}
        for lender, gpus in result.borrowed_from[team].items():
            result.lent_to.setdefault(lender, {})[team] = gpus
    return result


@dataclass(frozen=True)
class QuotaProposal:
    guarantee: int
    limit: int
    weight: int
    lendable: bool


def check_quota(
    proposal: QuotaProposal,
    *,
    model: str,
    capacity: int,
    other_guarantees: int,
    by_operator: bool,
    current: QuotaProposal | None,
    lead_ceiling: int | None,
) -> dict[str, list[str]]:
    """Errors by field for a quota change; empty when it may be applied."""
    errors: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    if proposal.guarantee < 0:
        add("guarantee", "must be 0 or more")
    if proposal.limit < proposal.guarantee:
        add("limit", f"{proposal.limit} is below the guarantee ({proposal.guarantee}); the limit includes the guarantee")
    if proposal.limit > capacity:
        add("limit", f"{proposal.limit} is more than the {capacity} {model} GPUs the grid has")
    if other_guarantees + proposal.guarantee > capacity:
        add(
            "guarantee",
            f"guarantees of {model} would add up to {other_guarantees + proposal.guarantee}, more than its {capacity} GPUs",
        )
    if not 1 <= proposal.weight <= 1000:
        add("weight", "must be between 1 and 1000")
    if not by_operator:
        _check_lead_change(proposal, current, lead_ceiling, add)
    return errors


def _check_lead_change(
    proposal: QuotaProposal, current: QuotaProposal | None, ceiling: int | None, add: Callable[[str, str], None]
) -> None:
    """Team leads may move their limit within the ceiling operators set, and lend or not; nothing else."""
    if current is None:
        add("team", "only operators create quotas")
        return
    if proposal.guarantee != current.guarantee:
        add("guarantee", "only operators change guarantees")
    if proposal.weight != current.weight:
        add("weight", "only operators change weights")
    top = ceiling if ceiling is not None else current.limit
    if proposal.limit > top:
        add("limit", f"{proposal.limit} is above the {top} GPUs operators allow this team")
