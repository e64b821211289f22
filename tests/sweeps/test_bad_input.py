"""Bad sweeps and bad reports get a 400 naming the field and the limit; nothing is half-created."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pytest_django import Settings
from rest_framework.test import APIClient

from jobs.models import Job
from portal.models import User
from sweeps import services
from sweeps.models import Sweep, Trial, TrialReport
from tests.sweeps.conftest import report, sweep_request

BAD_SWEEPS: list[tuple[dict[str, Any], str, str]] = [
    ({"space": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}}, "space.lr", "low (1) must be less than high (0.1)"),
    ({"space": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}}, "space.lr", "needs low > 0"),
    ({"space": {"lr": {"type": "float", "low": "a", "high": 1}}}, "space.lr", "low must be a finite number"),
    ({"space": {"n": {"type": "int", "low": 1.5, "high": 4}}}, "space.n", "whole low and high"),
    ({"space": {"x": {"type": "normal"}}}, "space.x", "type must be one of float, int, categorical"),
    ({"space": {"x": {"type": "categorical", "choices": []}}}, "space.x", "1 to 64 values"),
    ({"space": {"Bad-Name": {"type": "int", "low": 1, "high": 2}}}, "space", "lower-case"),
    ({"space": {}}, "space", "1 to 16 parameters"),
    ({"max_parallel": 8, "max_trials": 4}, "max_parallel", "must not exceed max_trials (4), not 8"),
    ({"max_trials": 501}, "max_trials", "between 1 and 500, not 501"),
    ({"retries": 4}, "retries", "between 0 and 3, not 4"),
    ({"sampler": "hyperband"}, "sampler", "grid, random, tpe"),
    ({"direction": "up"}, "direction", "minimize, maximize"),
    ({"early_stopping": "patience"}, "early_stopping", "none, median, asha"),
    ({"metric": ""}, "metric", "a metric name"),
    ({"budget": 3}, "budget", "is not a sweep field"),
    ({"base": {"name": "t", "gpu_model": "a100", "gpus_per_node": 99, "walltime": 600}}, "base.gpus_per_node", ""),
    (
        {"sampler": "grid", "space": {"a": {"type": "int", "low": 1, "high": 30}, "b": {"type": "int", "low": 1, "high": 30}}},
        "space",
        "the grid has 900 points; at most 500",
    ),
]


@pytest.mark.parametrize(("fields", "field", "message"), BAD_SWEEPS, ids=[f"{f}:{m[:20]}" for _, f, m in BAD_SWEEPS])
@pytest.mark.django_db
def test_a_bad_sweep_is_refused_naming_the_field_and_nothing_is_created(
    alice: User, api: Callable[[User | None], APIClient], fields: dict[str, Any], field: str, message: str
) -> None:
    response = api(alice).post("/api/v1/sweeps/", sweep_request(**fields), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert message in " ".join(response.json()[field])
    assert not Sweep.objects.exists() and not Trial.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db
def test_a_sweep_whose_trials_would_pass_the_pending_limit_is_not_half_created(
    alice: User, api: Callable[[User | None], APIClient], settings: Settings
) -> None:
    settings.MAX_PENDING_JOBS_PER_USER = 2
    response = api(alice).post("/api/v1/sweeps/", sweep_request(max_trials=5, max_parallel=3), format="json")
    assert response.status_code == 400 and "limit of 2" in " ".join(response.json()["base.pending_jobs"])
    assert not Sweep.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db
def test_a_good_sweep_through_the_api(alice: User, api: Callable[[User | None], APIClient]) -> None:
    response = api(alice).post("/api/v1/sweeps/", sweep_request(), format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["team"] == "vision" and len(body["trials"]) == 2 and body["best"] is None


BAD_REPORTS: list[tuple[Any, Any, str, str]] = [
    ("1", 0.5, "step", "must be a whole number"),
    (1.5, 0.5, "step", "must be a whole number"),
    (-1, 0.5, "step", "between 0 and"),
    (10**10, 0.5, "step", "between 0 and 1000000000"),
    (1, "NaN", "value", "finite number"),
    (1, None, "value", "finite number"),
]


@pytest.mark.parametrize(("step", "value", "field", "message"), BAD_REPORTS)
@pytest.mark.django_db
def test_a_bad_report_is_refused_naming_the_field(alice: User, step: Any, value: Any, field: str, message: str) -> None:
    trial = services.create_sweep(alice, sweep_request()).trials.get(number=0)
    response = report(trial, step, value)
    assert response.status_code == 400 and message in " ".join(response.json()[field]), response.content
    assert not TrialReport.objects.exists()


@pytest.mark.django_db
def test_steps_must_go_forward_and_reports_are_bounded(alice: User, settings: Settings) -> None:
    settings.SWEEP_MAX_REPORTS_PER_TRIAL = 2
    trial = services.create_sweep(alice, sweep_request()).trials.get(number=0)
    assert report(trial, 3, 0.5).status_code == 200
    response = report(trial, 3, 0.4)
    assert response.status_code == 400 and response.json()["step"] == ["must be greater than the last reported step (3), not 3"]
    assert report(trial, 4, 0.4).status_code == 200
    assert report(trial, 5, 0.3).json()["step"] == ["a trial reports at most 2 steps"]


@pytest.mark.django_db
def test_a_report_of_another_metric_is_refused(alice: User) -> None:
    trial = services.create_sweep(alice, sweep_request()).trials.get(number=0)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Trial {trial.job.env['GRID_TRIAL_TOKEN'] if trial.job else ''}")
    response = client.post(f"/api/v1/sweeps/trials/{trial.pk}/report", {"step": 1, "value": 1, "metric": "acc"}, format="json")
    assert response.status_code == 400 and response.json()["metric"] == ["this sweep optimises 'loss'"]


@pytest.mark.django_db
def test_the_form_shows_the_errors_and_creates_nothing(alice: User, web: Callable[[User | None], Any]) -> None:
    response = web(alice).post("/sweeps/new/", {"name": "x", "metric": "loss", "base": "{", "space": "{}"})
    assert response.status_code == 400 and "is not valid JSON" in response.content.decode()
    assert not Sweep.objects.exists()
