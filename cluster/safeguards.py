"""Pure rules of the grid's safeguards: thermal/XID auto-cordon with hysteresis, idle GPUs, efficiency.

No ORM, no clock, no I/O. Each rule takes what it remembers from the last cycle, this cycle's
reading (None when telemetry has nothing for it) and the time, and returns what to remember next
and what to do. Two principles run through all of them:

- A streak (hot, cool, idle) needs unbroken evidence: a cycle without data ends it, so a gap in
  telemetry can neither cordon nor uncordon a node, nor stop a job.
- A hot GPU seen is evidence even when another GPU of the node is missing; a node is only called
  cool again when every one of its GPUs reports and all are below the lower threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

# --- thermal and XID -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ThermalLimits:
    """When a GPU model is too hot, and when it is cool again (the gap between is the hysteresis band)."""

    cordon_c: float
    clear_c: float
    cordon_window_s: float
    clear_window_s: float

    def __post_init__(self) -> None:
        if self.clear_c >= self.cordon_c:
            raise ValueError(f"clear threshold {self.clear_c} must be below the cordon threshold {self.cordon_c}")
        if self.cordon_window_s < 0 or self.clear_window_s < 0:
            raise ValueError("windows must not be negative")


@dataclass(frozen=True)
class NodeReading:
    """One cycle's telemetry of one node: temperatures and XID codes of the GPUs that reported.

    `cool`: GPUs that reported a temperature below every clear threshold, whose values were not
    asked for (the cycle asks Prometheus only for GPUs at or above the lowest clear threshold, see
    `thermal_floor`). They count towards `complete` and are cool; they can never be the hottest.
    """

    temperatures: Mapping[int, float]  # gpu index -> °C
    xid: Mapping[int, int]  # gpu index -> last XID code (0: none)
    expected_gpus: int
    cool: int = 0

    @property
    def complete(self) -> bool:
        return len(self.temperatures) + self.cool >= self.expected_gpus

    def hottest(self) -> tuple[int, float] | None:
        if not self.temperatures:
            return None
        gpu = max(self.temperatures, key=lambda g: (self.temperatures[g], -g))
        return gpu, self.temperatures[gpu]


class Trip(StrEnum):
    """Why the guard holds a node cordoned."""

    NONE = ""
    THERMAL = "thermal"
    XID = "xid"


@dataclass(frozen=True)
class GuardMemory:
    """What the guard remembers about a node between cycles (times in seconds since the epoch)."""

    trip: Trip = Trip.NONE
    hot_since: float | None = None
    cool_since: float | None = None
    reason: str = ""


class Action(StrEnum):
    NONE = "none"
    CORDON = "cordon"
    UNCORDON = "uncordon"


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str = ""


KEEP = Verdict(Action.NONE)


def evaluate_node(
    memory: GuardMemory,
    reading: NodeReading | None,
    limits: ThermalLimits,
    now: float,
    suppressed: bool = False,
) -> tuple[GuardMemory, Verdict]:
    """One cycle of the guard for one node.

    `suppressed`: an operator override is in force; the guard keeps watching but does not cordon.
    """
    if reading is None or (not reading.temperatures and not reading.cool and not any(reading.xid.values())):
        # Nothing to go on: streaks end, no decision either way.
        return replace(memory, hot_since=None, cool_since=None), KEEP
    xid = _first_xid(reading)
    if xid is not None:
        return _on_xid(memory, xid, suppressed)
    hottest = reading.hottest()
    if hottest is not None and hottest[1] > limits.cordon_c:
        return _on_hot(memory, hottest, limits, now, suppressed)
    return _on_not_hot(memory, reading, limits, now)


def _first_xid(reading: NodeReading) -> tuple[int, int] | None:
    errors = sorted((gpu, code) for gpu, code in reading.xid.items() if code)
    return errors[0] if errors else None


def _on_xid(memory: GuardMemory, xid: tuple[int, int], suppressed: bool) -> tuple[GuardMemory, Verdict]:
    gpu, code = xid
    reason = f"health: XID {code} on GPU {gpu}"
    if memory.trip == Trip.XID or suppressed:
        return replace(memory, hot_since=None, cool_since=None), KEEP
    # An XID needs a person (a reset, a reseat): the node is held until an operator resumes it.
    already_cordoned = memory.trip == Trip.THERMAL
    held = GuardMemory(trip=Trip.XID, reason=reason)
    return held, (KEEP if already_cordoned else Verdict(Action.CORDON, reason))


def _on_hot(
    memory: GuardMemory, hottest: tuple[int, float], limits: ThermalLimits, now: float, suppressed: bool
) -> tuple[GuardMemory, Verdict]:
    hot_since = memory.hot_since if memory.hot_since is not None else now
    memory = replace(memory, hot_since=hot_since, cool_since=None)
    if memory.trip != Trip.NONE or suppressed or now - hot_since < limits.cordon_window_s:
        return memory, KEEP
    gpu, temp = hottest
    reason = f"thermal: GPU {gpu} at {temp:.0f} °C, above {limits.cordon_c:.0f} °C for {now - hot_since:.0f} s"
    return replace(memory, trip=Trip.THERMAL, reason=reason), Verdict(Action.CORDON, reason)


def _on_not_hot(memory: GuardMemory, reading: NodeReading, limits: ThermalLimits, now: float) -> tuple[GuardMemory, Verdict]:
    memory = replace(memory, hot_since=None)
    if memory.trip != Trip.THERMAL:
        return replace(memory, cool_since=None), KEEP
    hottest = reading.hottest()
    # No hottest value: every GPU that reported is among the `cool` ones (below every clear threshold).
    cool = reading.complete and (hottest is None or hottest[1] < limits.clear_c)
    if not cool:
        return replace(memory, cool_since=None), KEEP
    cool_since = memory.cool_since if memory.cool_since is not None else now
    if now - cool_since < limits.clear_window_s:
        return replace(memory, cool_since=cool_since), KEEP
    reason = f"thermal: every GPU below {limits.clear_c:.0f} °C for {now - cool_since:.0f} s"
    return GuardMemory(), Verdict(Action.UNCORDON, reason)


def limits_for(model: str, table: Mapping[str, ThermalLimits], default: ThermalLimits) -> ThermalLimits:
    return table.get(model, default)


def thermal_floor(table: Mapping[str, ThermalLimits]) -> float:
    """The lowest temperature any guard decision depends on: the lowest clear threshold of any model.

    A GPU below it is below every model's clear (and cordon) threshold, so the guard needs only to
    know it reported, not its value: the cycle asks Prometheus for the GPUs at or above it.
    """
    return min(limits.clear_c for limits in table.values())


# --- idle GPUs -----------------------------------------------------------------------------------


class IdleAction(StrEnum):
    """What a team's policy does with a job whose GPUs stay idle after the warning."""

    WARN = "warn"  # warn only
    STOP = "stop"
    RECLAIMABLE = "reclaimable"


@dataclass(frozen=True)
class IdlePolicy:
    threshold: float  # activity (0-1) below which a GPU counts as idle
    warn_after_s: float
    act_after_s: float  # after the warning
    action: IdleAction


@dataclass(frozen=True)
class IdleMemory:
    """A running job's idle streak and what has been done about it."""

    idle_since: float | None = None
    warned_at: float | None = None
    decision: str = ""  # "" | "stopped" | "reclaimable"


class IdleVerdict(StrEnum):
    NONE = "none"
    WARN = "warn"
    STOP = "stop"
    RECLAIMABLE = "reclaimable"
    ACTIVE_AGAIN = "active_again"


def activity(engine_active: float | None, utilization_percent: float | None) -> float | None:
    """How busy a GPU is (0-1): the graphics engine's active ratio, else the coarser utilisation."""
    if engine_active is not None:
        return engine_active
    if utilization_percent is not None:
        return utilization_percent / 100
    return None


class Seen(StrEnum):
    """How a running job's GPUs looked in one cycle."""

    GAP = "gap"  # a GPU without an activity, or fewer GPUs reported than the job holds: missing data
    IDLE = "idle"  # every GPU reported, all below the idle threshold
    BUSY = "busy"


def seen_of(activities: Sequence[float | None] | None, threshold: float) -> Seen:
    """`activities`: one per GPU of the job (None: that GPU reported no activity), or None for a gap."""
    if not activities or any(a is None for a in activities):
        return Seen.GAP
    return Seen.IDLE if max(a for a in activities if a is not None) < threshold else Seen.BUSY


def evaluate_idle(
    memory: IdleMemory, activities: Sequence[float | None] | None, policy: IdlePolicy, now: float
) -> tuple[IdleMemory, IdleVerdict]:
    """One cycle of idle detection for one running job; `activities`: one per GPU of the job."""
    return evaluate_seen(memory, seen_of(activities, policy.threshold), policy, now)


def evaluate_seen(memory: IdleMemory, seen: Seen, policy: IdlePolicy, now: float) -> tuple[IdleMemory, IdleVerdict]:
    """One cycle of idle detection for one running job, from how its GPUs looked."""
    if memory.decision == "stopped":
        return memory, IdleVerdict.NONE
    if seen == Seen.GAP:
        return replace(memory, idle_since=None), IdleVerdict.NONE
    if seen == Seen.BUSY:
        again = memory.warned_at is not None or memory.decision == "reclaimable"
        return IdleMemory(), (IdleVerdict.ACTIVE_AGAIN if again else IdleVerdict.NONE)
    idle_since = memory.idle_since if memory.idle_since is not None else now
    memory = replace(memory, idle_since=idle_since)
    if memory.warned_at is None:
        if now - idle_since >= policy.warn_after_s:
            return replace(memory, warned_at=now), IdleVerdict.WARN
        return memory, IdleVerdict.NONE
    if memory.decision or policy.action == IdleAction.WARN or now - memory.warned_at < policy.act_after_s:
        return memory, IdleVerdict.NONE
    if policy.action == IdleAction.STOP:
        return replace(memory, decision="stopped"), IdleVerdict.STOP
    return replace(memory, decision="reclaimable"), IdleVerdict.RECLAIMABLE


# --- efficiency ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EfficiencyTally:
    """Running sums over a job's GPU samples (one per GPU per cycle)."""

    samples: int = 0
    utilization_sum: float = 0.0
    idle_samples: int = 0
    memory_peak_mib: float = 0.0


@dataclass(frozen=True)
class GpuReading:
    utilization_percent: float
    activity: float
    memory_used_mib: float


def tally(current: EfficiencyTally, readings: Sequence[GpuReading], idle_threshold: float) -> EfficiencyTally:
    if not readings:
        return current
    return EfficiencyTally(
        samples=current.samples + len(readings),
        utilization_sum=current.utilization_sum + sum(r.utilization_percent for r in readings),
        idle_samples=current.idle_samples + sum(1 for r in readings if r.activity < idle_threshold),
        memory_peak_mib=max(current.memory_peak_mib, *(r.memory_used_mib for r in readings)),
    )


@dataclass(frozen=True)
class Efficiency:
    mean_utilization: float | None  # percent; None when no sample was ever seen
    memory_peak_mib: float | None
    idle_fraction: float | None


def summarise(t: EfficiencyTally) -> Efficiency:
    if t.samples == 0:
        return Efficiency(None, None, None)
    return Efficiency(round(t.utilization_sum / t.samples, 1), round(t.memory_peak_mib), round(t.idle_samples / t.samples, 3))


# --- configuration text ----------------------------------------------------------------------------


def parse_thermal(
    default_text: str, per_model_text: str, cordon_window_s: float, clear_window_s: float
) -> dict[str, ThermalLimits]:
    """`CORDON:CLEAR` for every model, and `model=CORDON:CLEAR,…` overrides; key "" is the default."""
    table = {"": _limits(default_text, cordon_window_s, clear_window_s, "GUARD_THERMAL_C")}
    for item in (part.strip() for part in per_model_text.split(",")):
        if not item:
            continue
        model, sep, text = item.partition("=")
        if not sep or not model.strip():
            raise ValueError(f"GUARD_THERMAL_MODELS entry {item!r}: expected model=CORDON:CLEAR")
        table[model.strip()] = _limits(text, cordon_window_s, clear_window_s, f"GUARD_THERMAL_MODELS {model}")
    return table


def _limits(text: str, cordon_window_s: float, clear_window_s: float, name: str) -> ThermalLimits:
    high, _sep, low = text.partition(":")
    try:
        return ThermalLimits(float(high), float(low), cordon_window_s, clear_window_s)
    except ValueError as exc:
        raise ValueError(f"{name}={text!r}: expected CORDON:CLEAR in °C with CLEAR below CORDON ({exc})") from None


def parse_team_actions(text: str) -> dict[str, IdleAction]:
    """`team=stop|reclaimable|warn,…`."""
    actions = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        team, _, action = item.partition("=")
        try:
            actions[team.strip()] = IdleAction(action.strip())
        except ValueError:
            raise ValueError(f"IDLE_TEAM_ACTIONS entry {item!r}: expected team=stop|reclaimable|warn") from None
    return actions
