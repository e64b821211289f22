"""Job states, pending reasons and the transition table.

A transition is one conditional UPDATE (`filter(pk=…, state=OLD).update(state=NEW)`) plus an
event row, done only by `jobs.services.transition`.
"""

from __future__ import annotations

from django.db import models

from portal.states import Transitions


class JobState(models.TextChoices):
    PENDING = "pending", "Pending"
    HELD = "held", "Held"
    ADMITTED = "admitted", "Admitted"
    DISPATCHED = "dispatched", "Dispatched"
    RUNNING = "running", "Running"
    PREEMPTING = "preempting", "Preempting"
    REQUEUED = "requeued", "Requeued"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


S = JobState
TRANSITIONS = Transitions(
    {
        S.PENDING: frozenset({S.ADMITTED, S.HELD, S.CANCELLED}),
        S.HELD: frozenset({S.PENDING, S.CANCELLED}),
        S.ADMITTED: frozenset({S.DISPATCHED, S.PENDING, S.FAILED, S.CANCELLED}),
        S.DISPATCHED: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.REQUEUED}),
        S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PREEMPTING, S.REQUEUED}),
        S.PREEMPTING: frozenset({S.REQUEUED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
        S.REQUEUED: frozenset({S.ADMITTED, S.HELD, S.CANCELLED}),
        S.SUCCEEDED: frozenset(),
        S.FAILED: frozenset(),
        S.CANCELLED: frozenset(),
    }
)

WAITING = frozenset({S.PENDING, S.REQUEUED})
HOLDS_GPUS = frozenset({S.ADMITTED, S.DISPATCHED, S.RUNNING, S.PREEMPTING})
ON_BACKEND = frozenset({S.DISPATCHED, S.RUNNING, S.PREEMPTING})
TERMINAL = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
CANCELLABLE = TRANSITIONS.sources_of(S.CANCELLED)


def sources_of(target: str) -> frozenset[str]:
    """The states from which `target` may be entered."""
    return TRANSITIONS.sources_of(target)


class PendingReason(models.TextChoices):
    """Why a waiting job is not running yet."""

    NONE = "", "—"
    NEW = "new", "Not yet considered"
    QUOTA = "quota", "Team GPU limit reached"
    CAPACITY = "capacity", "Not enough free GPUs"
    FRAGMENTATION = "fragmentation", "Free GPUs are spread over too many nodes"
    QUEUE = "queue", "Behind earlier jobs of the team"
    PRIORITY = "priority", "Higher-priority jobs go first"
    BUDGET = "budget", "Held: team budget"
    NO_NODES = "no_nodes", "No healthy node has this GPU model"
    GANG = "gang", "Not enough nodes free at once for the whole gang"
    BURST_TEAMS = "burst_teams", "The free nodes are another team's burst"
