"""A 20-trial sweep on the simulated grid: trials run as jobs, report through the API, some are pruned,
and the sweep ends with the best trial found."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from pytest_django import DjangoCaptureOnCommitCallbacks

from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from sweeps import services
from sweeps.models import Sweep, Trial
from sweeps.states import SweepState, TrialState
from tests.sweeps.conftest import end_job, report, sweep_request, token

STEPS = 5


def loss(params: dict[str, object], step: int) -> float:
    """Best near lr = 0.01 with adam; every trial improves a little with each step."""
    lr = float(str(params["lr"]))
    return (math.log10(lr) + 2) ** 2 + (0.5 if params["opt"] == "sgd" else 0.0) + 1.0 / step


def run_trial(trial: Trial) -> bool:
    """Report each step until told to stop; True when the trial ran to its end."""
    for step in range(1, STEPS + 1):
        response = report(trial, step, loss(trial.params, step))
        assert response.status_code == 200, response.content
        if response.json()["should_stop"]:
            return False
    return True


def drive(sweep: Sweep, run_on_grid: Callable[[], None], stopping: str) -> None:
    for _ in range(100):
        sweep.refresh_from_db()
        if sweep.state != SweepState.RUNNING:
            return
        running = list(sweep.trials.filter(state=TrialState.RUNNING).select_related("job"))
        assert 0 < len(running) <= sweep.max_parallel
        run_on_grid()
        assert set(Job.objects.filter(sweep_trials__in=running).values_list("state", flat=True)) == {JobState.DISPATCHED}
        for trial in running:
            assert trial.job is not None
            if run_trial(trial):
                end_job(trial.job, JobState.SUCCEEDED)
            else:
                trial.job.refresh_from_db()
                assert trial.job.state == JobState.CANCELLED  # pruning cancelled its job
        services.advance(sweep.pk)
    raise AssertionError(f"sweep with {stopping} did not finish")


@pytest.mark.parametrize("stopping", ["median", "asha"])
@pytest.mark.django_db
def test_it_runs_twenty_trials_prunes_some_and_ends_with_the_best(
    alice: User,
    run_on_grid: Callable[[], None],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    stopping: str,
) -> None:
    sweep = services.create_sweep(alice, sweep_request(max_trials=20, max_parallel=4, early_stopping=stopping))
    assert sweep.trials.count() == 4
    drive(sweep, run_on_grid, stopping)

    sweep.refresh_from_db()
    trials = list(sweep.trials.all())
    assert sweep.state == SweepState.SUCCEEDED and len(trials) == 20
    states = [t.state for t in trials]
    assert states.count(TrialState.PRUNED) >= 1, states
    assert states.count(TrialState.COMPLETE) >= 2, states  # successive halving keeps about one in three
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = services.best_trial(sweep)
    assert best is not None and best.value == min(t.value for t in complete if t.value is not None)
    assert f"trial {best.number}" in sweep.detail
    assert best.last_step == STEPS and best.value == pytest.approx(loss(best.params, STEPS))
    # Every trial was a job of alice's team at her priority, with its params in env and command.
    for trial in trials:
        job = trial.job
        assert job is not None
        assert (job.team_id, job.owner_id, job.priority) == (sweep.team_id, alice.pk, "standard")
        assert job.env["GRID_PARAM_OPT"] == trial.params["opt"]
        assert f"--opt={trial.params['opt']}" in job.command and str(trial.params["lr"]) in job.command


@pytest.mark.django_db
def test_it_keeps_at_most_max_parallel_trials_running(alice: User, run_on_grid: Callable[[], None]) -> None:
    sweep = services.create_sweep(alice, sweep_request(max_trials=5, max_parallel=2))
    services.advance(sweep.pk)
    assert sweep.trials.count() == 2  # nothing finished: no new trial
    first = sweep.trials.get(number=0)
    assert first.job is not None
    report(first, 1, 0.5)
    end_job(first.job, JobState.SUCCEEDED)
    services.advance(sweep.pk)
    assert sweep.trials.count() == 3
    assert sweep.trials.filter(state=TrialState.RUNNING).count() == 2


@pytest.mark.django_db
def test_a_job_that_succeeds_without_reporting_is_a_failed_trial_not_a_lost_one(alice: User) -> None:
    sweep = services.create_sweep(alice, sweep_request(max_trials=1, max_parallel=1))
    trial = sweep.trials.get()
    assert trial.job is not None
    end_job(trial.job, JobState.SUCCEEDED)
    assert services.advance(sweep.pk) == SweepState.FAILED
    trial.refresh_from_db()
    assert trial.state == TrialState.FAILED and "without reporting loss" in trial.detail


@pytest.mark.django_db
def test_the_report_tells_a_finished_trial_to_stop(alice: User) -> None:
    sweep = services.create_sweep(alice, sweep_request(max_trials=2, max_parallel=1))
    trial = sweep.trials.get()
    key = token(trial)
    services.cancel(alice, sweep)
    response = report(trial, 1, 0.1, key=key)
    assert response.status_code == 200 and response.json() == {"trial": trial.pk, "state": "cancelled", "should_stop": True}
