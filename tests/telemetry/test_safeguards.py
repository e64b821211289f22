"""The pure safeguard rules: thermal hysteresis, XID, missing data, per-model limits, idle GPUs, efficiency."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cluster.safeguards import (
    Action,
    EfficiencyTally,
    GpuReading,
    GuardMemory,
    IdleAction,
    IdleMemory,
    IdlePolicy,
    IdleVerdict,
    NodeReading,
    ThermalLimits,
    Trip,
    activity,
    evaluate_idle,
    evaluate_node,
    limits_for,
    summarise,
    tally,
)

LIMITS = ThermalLimits(cordon_c=85, clear_c=75, cordon_window_s=30, clear_window_s=60)


def reading(*temps: float, xid: dict[int, int] | None = None, expected: int | None = None) -> NodeReading:
    return NodeReading(dict(enumerate(temps)), xid or {}, expected if expected is not None else len(temps))


def run(
    steps: Sequence[tuple[float, NodeReading | None]], memory: GuardMemory | None = None, **kw: bool
) -> tuple[GuardMemory, list[Action]]:
    memory = memory or GuardMemory()
    actions: list[Action] = []
    for now, r in steps:
        memory, verdict = evaluate_node(memory, r, LIMITS, now, **kw)
        actions.append(verdict.action)
    return memory, actions


def test_it_cordons_only_after_the_hot_window() -> None:
    memory, actions = run([(0, reading(90, 60)), (10, reading(91, 60)), (29, reading(92, 60)), (30, reading(92, 60))])
    assert actions == [Action.NONE, Action.NONE, Action.NONE, Action.CORDON]
    assert memory.trip == Trip.THERMAL
    assert "GPU 0 at 92 °C" in memory.reason and "above 85 °C" in memory.reason


def test_it_cordons_once_not_every_cycle() -> None:
    _, actions = run([(0, reading(90)), (30, reading(90)), (40, reading(95)), (50, reading(99))])
    assert actions.count(Action.CORDON) == 1


def test_a_dip_below_the_threshold_restarts_the_hot_window() -> None:
    _, actions = run([(0, reading(90)), (20, reading(80)), (25, reading(90)), (50, reading(90)), (55, reading(90))])
    assert actions == [Action.NONE] * 4 + [Action.CORDON]


def test_exactly_at_the_threshold_is_not_hot() -> None:
    _, actions = run([(0, reading(85)), (100, reading(85))])
    assert actions == [Action.NONE, Action.NONE]


def test_missing_data_ends_the_hot_streak_and_never_cordons() -> None:
    _, actions = run([(0, reading(90)), (20, None), (31, reading(90)), (50, reading(90)), (61, reading(90))])
    assert actions == [Action.NONE, Action.NONE, Action.NONE, Action.NONE, Action.CORDON]


def test_a_node_with_no_gpus_reporting_counts_as_missing() -> None:
    memory, actions = run([(0, reading(90)), (40, NodeReading({}, {}, 2))])
    assert actions == [Action.NONE, Action.NONE] and memory.hot_since is None


def test_a_hot_gpu_is_evidence_even_when_another_gpu_is_missing() -> None:
    _, actions = run([(0, reading(90, expected=2)), (30, reading(90, expected=2))])
    assert actions[-1] == Action.CORDON


def hot_then(steps: Sequence[tuple[float, NodeReading | None]]) -> tuple[GuardMemory, list[Action]]:
    memory, _ = run([(0, reading(90, 60)), (30, reading(90, 60))])
    assert memory.trip == Trip.THERMAL
    return run(steps, memory)


def test_hysteresis_it_uncordons_only_after_a_cool_window_below_the_lower_threshold() -> None:
    memory, actions = hot_then([(40, reading(70, 60)), (80, reading(70, 60)), (100, reading(70, 60))])
    assert actions == [Action.NONE, Action.NONE, Action.UNCORDON]
    assert memory == GuardMemory()


def test_hysteresis_inside_the_band_it_stays_cordoned_forever() -> None:
    _, actions = hot_then([(t, reading(80, 60)) for t in range(40, 1000, 20)])
    assert set(actions) == {Action.NONE}


def test_hysteresis_a_warm_reading_restarts_the_cool_window() -> None:
    _, actions = hot_then([(40, reading(70)), (90, reading(78)), (95, reading(70)), (150, reading(70)), (155, reading(70))])
    assert actions == [Action.NONE] * 4 + [Action.UNCORDON]


@pytest.mark.parametrize("gap", [None, "partial", "empty"])
def test_missing_data_never_uncordons(gap: str | None) -> None:
    missing = {None: None, "partial": reading(60, expected=2), "empty": NodeReading({}, {}, 2)}[gap]
    memory, actions = hot_then([(t, missing) for t in range(40, 2000, 10)])
    assert set(actions) == {Action.NONE} and memory.trip == Trip.THERMAL


def test_missing_data_in_the_middle_of_the_cool_window_restarts_it() -> None:
    _, actions = hot_then(
        [(40, reading(70, 60)), (90, None), (95, reading(70, 60)), (140, reading(70, 60)), (155, reading(70, 60))]
    )
    assert actions == [Action.NONE] * 4 + [Action.UNCORDON]


def test_an_xid_cordons_at_once_with_its_code() -> None:
    memory, actions = run([(0, reading(50, 50, xid={1: 79}))])
    assert actions == [Action.CORDON]
    assert memory.trip == Trip.XID and memory.reason == "health: XID 79 on GPU 1"


def test_an_xid_is_never_cleared_by_the_guard_even_when_cool_and_clean() -> None:
    memory, actions = run([(0, reading(50, xid={0: 48}))] + [(t, reading(40)) for t in range(10, 3000, 10)])
    assert actions[0] == Action.CORDON and set(actions[1:]) == {Action.NONE}
    assert memory.trip == Trip.XID


def test_an_xid_on_a_thermally_cordoned_node_holds_it_without_a_second_cordon() -> None:
    memory, actions = hot_then([(40, reading(70, xid={0: 79})), (200, reading(50))])
    assert actions == [Action.NONE, Action.NONE] and memory.trip == Trip.XID


def test_an_xid_with_no_temperatures_still_counts() -> None:
    _, actions = run([(0, NodeReading({}, {3: 79}, 8))])
    assert actions == [Action.CORDON]


def test_an_override_suppresses_cordons_but_keeps_watching() -> None:
    memory, actions = run([(0, reading(95, xid={0: 79})), (0, reading(95)), (100, reading(95))], suppressed=True)
    assert set(actions) == {Action.NONE} and memory.trip == Trip.NONE and memory.hot_since == 0
    memory, verdict = evaluate_node(memory, reading(95), LIMITS, 101)
    assert verdict.action == Action.CORDON


def test_thresholds_are_per_gpu_model() -> None:
    hot_model = ThermalLimits(cordon_c=90, clear_c=80, cordon_window_s=0, clear_window_s=0)
    table = {"h100": hot_model}
    assert limits_for("h100", table, LIMITS) is hot_model
    assert limits_for("a100", table, LIMITS) is LIMITS
    _, on_h100 = evaluate_node(GuardMemory(), reading(88), hot_model, 0)
    _, on_a100 = evaluate_node(GuardMemory(), reading(88), ThermalLimits(85, 75, 0, 0), 0)
    assert on_h100.action == Action.NONE and on_a100.action == Action.CORDON


def test_limits_reject_an_inverted_band() -> None:
    with pytest.raises(ValueError):
        ThermalLimits(cordon_c=80, clear_c=80, cordon_window_s=0, clear_window_s=0)
    with pytest.raises(ValueError):
        ThermalLimits(cordon_c=80, clear_c=70, cordon_window_s=-1, clear_window_s=0)


def test_the_hottest_gpu_is_named_and_ties_go_to_the_lowest_index() -> None:
    assert reading(70, 91, 91).hottest() == (1, 91)
    assert NodeReading({}, {}, 1).hottest() is None


# --- idle --------------------------------------------------------------------------------------

POLICY = IdlePolicy(threshold=0.05, warn_after_s=60, act_after_s=120, action=IdleAction.STOP)


def idle_run(
    steps: Sequence[tuple[float, Sequence[float | None] | None]], policy: IdlePolicy = POLICY, memory: IdleMemory | None = None
) -> tuple[IdleMemory, list[IdleVerdict]]:
    memory = memory or IdleMemory()
    verdicts: list[IdleVerdict] = []
    for now, acts in steps:
        memory, verdict = evaluate_idle(memory, acts, policy, now)
        verdicts.append(verdict)
    return memory, verdicts


def test_activity_prefers_the_engine_ratio_and_falls_back_to_utilisation() -> None:
    assert activity(0.4, 10.0) == 0.4
    assert activity(None, 10.0) == pytest.approx(0.1)
    assert activity(None, None) is None


def test_an_idle_job_is_warned_then_stopped() -> None:
    memory, verdicts = idle_run(
        [(0, [0.0, 0.01]), (59, [0.0, 0.0]), (60, [0.0, 0.0]), (179, [0.0, 0.0]), (180, [0.0, 0.0]), (400, [0.0, 0.0])]
    )
    assert verdicts == [
        IdleVerdict.NONE,
        IdleVerdict.NONE,
        IdleVerdict.WARN,
        IdleVerdict.NONE,
        IdleVerdict.STOP,
        IdleVerdict.NONE,
    ]
    assert memory.decision == "stopped"


def test_one_busy_gpu_keeps_the_job_active() -> None:
    _, verdicts = idle_run([(t, [0.0, 0.5]) for t in range(0, 1000, 30)])
    assert set(verdicts) == {IdleVerdict.NONE}


@pytest.mark.parametrize(
    ("action", "last"), [(IdleAction.RECLAIMABLE, IdleVerdict.RECLAIMABLE), (IdleAction.WARN, IdleVerdict.NONE)]
)
def test_team_policy_chooses_what_follows_the_warning(action: IdleAction, last: IdleVerdict) -> None:
    policy = IdlePolicy(0.05, 60, 120, action)
    _memory, verdicts = idle_run([(0, [0.0]), (60, [0.0]), (180, [0.0])], policy)
    assert verdicts == [IdleVerdict.NONE, IdleVerdict.WARN, last]


def test_a_reclaimable_job_that_works_again_is_cleared() -> None:
    policy = IdlePolicy(0.05, 60, 120, IdleAction.RECLAIMABLE)
    memory, verdicts = idle_run([(0, [0.0]), (60, [0.0]), (180, [0.0]), (190, [0.9])], policy)
    assert verdicts[-1] == IdleVerdict.ACTIVE_AGAIN and memory == IdleMemory()


@pytest.mark.parametrize("missing", [None, [], [0.0, None]])
def test_missing_data_never_stops_a_job(missing: list[float | None] | None) -> None:
    memory, verdicts = idle_run([(0, [0.0, 0.0]), (60, [0.0, 0.0])] + [(t, missing) for t in range(70, 5000, 10)])
    assert verdicts[1] == IdleVerdict.WARN and set(verdicts[2:]) == {IdleVerdict.NONE}
    assert memory.decision == ""


def test_a_gap_restarts_the_idle_streak() -> None:
    _, verdicts = idle_run([(0, [0.0]), (50, None), (55, [0.0]), (110, [0.0]), (115, [0.0])])
    assert verdicts == [IdleVerdict.NONE] * 4 + [IdleVerdict.WARN]


def test_a_stopped_job_is_never_decided_again() -> None:
    _, verdicts = idle_run([(0, [0.9])], memory=IdleMemory(decision="stopped"))
    assert verdicts == [IdleVerdict.NONE]


# --- efficiency --------------------------------------------------------------------------------


def test_efficiency_is_mean_utilisation_memory_peak_and_idle_fraction() -> None:
    t = EfficiencyTally()
    t = tally(t, [GpuReading(80, 0.8, 1000), GpuReading(0, 0.0, 500)], 0.05)
    t = tally(t, [GpuReading(90, 0.9, 3000), GpuReading(2, 0.02, 400)], 0.05)
    t = tally(t, [], 0.05)
    e = summarise(t)
    assert e.mean_utilization == 43.0 and e.memory_peak_mib == 3000 and e.idle_fraction == 0.5


def test_a_job_never_seen_has_no_efficiency_figures() -> None:
    e = summarise(EfficiencyTally())
    assert (e.mean_utilization, e.memory_peak_mib, e.idle_fraction) == (None, None, None)
