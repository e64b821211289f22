"""A sweep is its team's: the outsider is refused every sweep route, and a trial's token reports for that trial only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from rest_framework.test import APIClient

from jobs.states import JobState
from portal.models import User
from sweeps import services
from sweeps.models import Sweep, TrialReport
from tests.sweeps.conftest import end_job, report, sweep_request, token

PAGES = ("/sweeps/{}/", "/sweeps/{}/data", "/sweeps/{}/katib.yaml")
POSTS = ("/sweeps/{}/cancel/", "/sweeps/{}/best-job/")
API = ("/api/v1/sweeps/{}/",)


@pytest.fixture
def sweep(alice: User) -> Sweep:
    return services.create_sweep(alice, sweep_request(max_trials=3, max_parallel=2))


@pytest.mark.django_db
def test_the_outsider_is_refused_every_sweep_route(
    sweep: Sweep, carol: User, web: Callable[[User | None], Client], api: Callable[[User | None], APIClient]
) -> None:
    browser, client = web(carol), api(carol)
    for url in PAGES:
        assert browser.get(url.format(sweep.pk)).status_code == 404, url
    for url in POSTS:
        assert browser.post(url.format(sweep.pk)).status_code == 404, url
    assert client.get(f"/api/v1/sweeps/{sweep.pk}/").status_code == 404
    assert client.post(f"/api/v1/sweeps/{sweep.pk}/cancel/").status_code == 404
    assert sweep.pk not in [s["id"] for s in client.get("/api/v1/sweeps/").json()["results"]]
    assert "lr-search" not in browser.get("/sweeps/").content.decode()
    sweep.refresh_from_db()
    assert sweep.state == "running"


@pytest.mark.django_db
def test_a_trial_token_reports_for_its_own_trial_only(sweep: Sweep, carol: User) -> None:
    other = services.create_sweep(carol, sweep_request(name="carols", max_trials=1, max_parallel=1))
    mine, theirs = sweep.trials.get(number=0), other.trials.get()
    assert report(mine, 1, 0.5, key=token(theirs)).status_code == 403
    assert report(mine, 1, 0.5, key=token(sweep.trials.get(number=1))).status_code == 403  # nor a sibling's
    assert report(mine, 1, 0.5, key="not-a-token").status_code == 403
    assert (
        APIClient().post(f"/api/v1/sweeps/trials/{mine.pk}/report", {"step": 1, "value": 0.5}, format="json").status_code == 401
    )
    assert not TrialReport.objects.exists()
    assert report(mine, 1, 0.5).status_code == 200


@pytest.mark.django_db
def test_the_token_is_hashed_at_rest(sweep: Sweep) -> None:
    trial = sweep.trials.get(number=0)
    key = token(trial)
    assert key not in trial.token_hash and len(trial.token_hash) == 64


@pytest.mark.django_db
def test_the_team_sees_the_sweep_and_a_member_makes_a_job_from_the_best_trial(
    sweep: Sweep, bob: User, web: Callable[[User | None], Client]
) -> None:
    trial = sweep.trials.get(number=0)
    assert trial.job is not None
    report(trial, 1, 0.25)
    end_job(trial.job, JobState.SUCCEEDED)
    services.advance(sweep.pk)
    browser = web(bob)
    page = browser.get(f"/sweeps/{sweep.pk}/").content.decode()
    assert "Best trial: 0" in page and "New job from best params" in page
    data = browser.get(f"/sweeps/{sweep.pk}/data").json()
    assert data["best"]["number"] == 0 and data["figure"]["data"][0]["y"] == [0.25]
    response = browser.post(f"/sweeps/{sweep.pk}/best-job/")
    assert response.status_code == 302
    job_id = int(response["Location"].rstrip("/").rsplit("/", 1)[1])
    job = bob.jobs.get(pk=job_id)
    assert job.env["GRID_PARAM_OPT"] == trial.params["opt"] and "GRID_TRIAL_TOKEN" not in job.env
