"""Grid, random and TPE samplers produce valid params; the same rows and seed give the same params."""

from __future__ import annotations

import pytest

from jobs.states import JobState
from portal.models import User
from sweeps import engine, services
from sweeps import space as sp
from sweeps.states import SweepState, TrialState
from tests.sweeps.conftest import end_job, report

SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "points": 3},
    "layers": {"type": "int", "low": 2, "high": 10, "step": 2},
    "width": {"type": "int", "low": 16, "high": 1024, "log": True},
    "opt": {"type": "categorical", "choices": ["sgd", "adam", 3, True]},
}
LIMITS = sp.Limits(max_trials=500, max_parallel=32)


def plan(sampler: str) -> sp.SweepPlan:
    return sp.validate({"name": "s", "metric": "loss", "space": SPACE, "sampler": sampler, "max_trials": 30}, LIMITS)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_random_and_tpe_give_valid_params_and_repeat_for_the_same_rows(sampler: str) -> None:
    p = plan(sampler)
    config = engine.StudyConfig(p.space, sampler, "minimize", "none", seed=7)
    trials: list[engine.TrialData] = []
    for number in range(15):
        params = engine.next_params(config, trials)
        assert params is not None and set(params) == set(SPACE)
        assert all(sp.contains(param, params[param.name]) for param in p.space), params
        assert params == engine.next_params(config, trials)  # deterministic
        trials.append(engine.TrialData(number, params, TrialState.COMPLETE, value=float(params["layers"])))


def test_the_grid_walks_every_point_once_then_stops() -> None:
    space = sp.validate(
        {
            "name": "g",
            "metric": "m",
            "sampler": "grid",
            "space": {"a": {"type": "int", "low": 1, "high": 3}, "b": {"type": "categorical", "choices": ["x", "y"]}},
        },
        LIMITS,
    ).space
    config = engine.StudyConfig(space, "grid", "minimize", "none", 0)
    seen: list[tuple[object, object]] = []
    while (
        params := engine.next_params(config, [engine.TrialData(n, {}, TrialState.COMPLETE) for n in range(len(seen))])
    ) is not None:
        seen.append((params["a"], params["b"]))
    assert sorted(seen) == sorted((a, b) for a in (1, 2, 3) for b in ("x", "y")) and len(set(seen)) == 6


def test_log_and_float_axes_of_a_grid() -> None:
    log_axis = sp.axis(sp.Param("lr", "float", low=1e-4, high=1e-1, log=True, points=4))
    assert log_axis == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert sp.axis(sp.Param("d", "float", low=0.0, high=0.5, points=3)) == pytest.approx([0.0, 0.25, 0.5])


@pytest.mark.django_db
def test_a_grid_sweep_stops_when_its_points_run_out(alice: User) -> None:
    sweep = services.create_sweep(
        alice,
        {
            "name": "grid", "metric": "loss", "sampler": "grid", "max_trials": 10, "max_parallel": 3,
            "base": {"name": "t", "command": ["run", "--n={n}"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600},
            "space": {"n": {"type": "int", "low": 1, "high": 3}},
        },
    )  # fmt: skip
    trials = list(sweep.trials.all())
    assert [t.params for t in trials] == [{"n": 1}, {"n": 2}, {"n": 3}]
    for trial in trials:
        assert trial.job is not None and trial.job.command == ["run", f"--n={trial.params['n']}"]
        report(trial, 1, float(trial.params["n"]))
        end_job(trial.job, JobState.SUCCEEDED)
    assert services.advance(sweep.pk) == SweepState.SUCCEEDED
    best = services.best_trial(sweep)
    assert best is not None and best.params == {"n": 1} and sweep.trials.count() == 3
