"""When an idle notebook is warned and culled (pure: plain data in, a decision out; no ORM, clock or I/O).

A notebook is idle only when both its kernel (Jupyter's last_activity, or the proxy's last request)
and its GPUs (telemetry's idle streak) have been idle; it is culled `idle_s` after both went
quiet, or when its lifetime is up. The owner is always warned `warn_s` before a cull: a session
found past its cull time without a warning is warned now and culled `warn_s` later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Action(StrEnum):
    KEEP = "keep"
    WARN = "warn"
    UNWARN = "unwarn"  # warned, then active again: the warning is withdrawn
    CULL = "cull"


@dataclass(frozen=True)
class Policy:
    """How long both kernel and GPUs may be idle, and how long before a cull the owner is warned."""

    idle_s: float
    warn_s: float


@dataclass(frozen=True)
class Facts:
    """What is known of one notebook now. `gpu_idle_since` None: its GPUs are busy."""

    now: datetime
    started_at: datetime
    lifetime_s: float
    kernel_active_at: datetime | None
    gpu_idle_since: datetime | None
    warned_at: datetime | None


@dataclass(frozen=True)
class Decision:
    """What to do, why (`idle` or `lifetime`; empty for keep), and when the cull is due."""

    action: Action
    why: str = ""
    cull_at: datetime | None = None


def idle_since(facts: Facts) -> datetime | None:
    """Since when kernel and GPUs have both been idle, or None while either is busy."""
    if facts.gpu_idle_since is None:
        return None
    kernel_quiet = max(facts.kernel_active_at or facts.started_at, facts.started_at)
    return max(kernel_quiet, facts.gpu_idle_since)


def due(facts: Facts, policy: Policy) -> tuple[datetime, str]:
    """The time the notebook is to be culled and why, before any warning moves it on."""
    ends = facts.started_at + timedelta(seconds=facts.lifetime_s)
    quiet = idle_since(facts)
    if quiet is not None and quiet + timedelta(seconds=policy.idle_s) < ends:
        return quiet + timedelta(seconds=policy.idle_s), "idle"
    return ends, "lifetime"


def decide(facts: Facts, policy: Policy) -> Decision:
    cull_at, why = due(facts, policy)
    warn = timedelta(seconds=policy.warn_s)
    if facts.warned_at is not None:
        if facts.now < cull_at - warn:
            return Decision(Action.UNWARN, "", cull_at)  # used again: no longer due within the warning
        cull_at = max(cull_at, facts.warned_at + warn)  # the owner always gets the whole warning
        if facts.now >= cull_at:
            return Decision(Action.CULL, why, cull_at)
        return Decision(Action.KEEP, why, cull_at)
    if facts.now >= cull_at - warn:
        return Decision(Action.WARN, why, max(cull_at, facts.now + warn))
    return Decision(Action.KEEP, "", cull_at)
