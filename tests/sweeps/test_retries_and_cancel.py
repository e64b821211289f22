"""Failed trials are retried with a new job and token, then recorded (never lost); cancelling a sweep cancels its trials."""

from __future__ import annotations

import pytest

from jobs.states import JobState
from portal.models import User
from sweeps import services
from sweeps.models import Trial
from sweeps.states import SweepState, TrialState
from tests.sweeps.conftest import end_job, report, sweep_request, token


def current_job(trial: Trial) -> int:
    trial.refresh_from_db()
    assert trial.job_id is not None
    return trial.job_id


@pytest.mark.django_db
def test_it_retries_a_failed_trial_with_a_new_job_and_token_then_records_it_failed(alice: User) -> None:
    sweep = services.create_sweep(alice, sweep_request(max_trials=1, max_parallel=1, retries=2))
    trial = sweep.trials.get()
    jobs = []
    for attempt in (1, 2, 3):
        old_key = token(trial)
        assert report(trial, 1, 0.9).status_code == 200
        jobs.append(current_job(trial))
        assert trial.job is not None
        end_job(trial.job, JobState.FAILED)
        services.advance(sweep.pk)
        trial.refresh_from_db()
        if attempt < 3:
            assert trial.state == TrialState.RUNNING and trial.attempts == attempt + 1
            assert current_job(trial) not in jobs and trial.params == sweep.trials.get().params
            assert trial.last_step is None and not trial.reports.exists()  # the new attempt starts clean
            assert report(trial, 1, 0.5, key=old_key).status_code == 403  # the old attempt's token stopped working
    assert trial.state == TrialState.FAILED and trial.failed_job_ids == jobs
    assert "after 3 attempt(s)" in trial.detail
    sweep.refresh_from_db()
    assert sweep.state == SweepState.FAILED and sweep.detail == "no trial completed"


@pytest.mark.django_db
def test_without_retries_a_failed_trial_is_recorded_and_the_next_one_starts(alice: User) -> None:
    sweep = services.create_sweep(alice, sweep_request(max_trials=2, max_parallel=1))
    first = sweep.trials.get()
    assert first.job is not None
    end_job(first.job, JobState.FAILED)
    services.advance(sweep.pk)
    first.refresh_from_db()
    assert first.state == TrialState.FAILED and first.failed_job_ids == [first.job_id]
    assert sweep.trials.filter(number=1, state=TrialState.RUNNING).exists()


@pytest.mark.django_db
def test_cancelling_a_sweep_cancels_its_running_trials_and_their_jobs(alice: User, bob: User) -> None:
    sweep = services.create_sweep(alice, sweep_request(max_trials=4, max_parallel=3))
    done = sweep.trials.get(number=0)
    assert done.job is not None
    report(done, 1, 0.2)
    end_job(done.job, JobState.SUCCEEDED)
    services.advance(sweep.pk)
    services.cancel(bob, sweep)  # bob leads the team
    sweep.refresh_from_db()
    assert sweep.state == SweepState.CANCELLED and "bob" in sweep.detail
    states = dict(sweep.trials.values_list("number", "state"))
    assert states[0] == TrialState.COMPLETE and [states[n] for n in (1, 2, 3)] == [TrialState.CANCELLED] * 3
    for trial in sweep.trials.exclude(number=0).select_related("job"):
        assert trial.job is not None and trial.job.state == JobState.CANCELLED
    assert services.advance(sweep.pk) == SweepState.CANCELLED and sweep.trials.count() == 4  # no new trials
    with pytest.raises(services.SweepActionError, match="already ended"):
        services.cancel(alice, sweep)


@pytest.mark.django_db
def test_a_teammate_who_is_not_owner_or_lead_may_not_cancel(alice: User, bob: User) -> None:
    sweep = services.create_sweep(bob, sweep_request(max_trials=2, max_parallel=1))
    with pytest.raises(services.SweepForbidden):
        services.cancel(alice, sweep)
    sweep.refresh_from_db()
    assert sweep.state == SweepState.RUNNING
