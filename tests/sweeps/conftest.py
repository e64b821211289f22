"""Sweeps on the simulated grid: a request to start from, a trial's token, and driving trial jobs to an end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from sweeps.models import Trial

LIFE = (JobState.PENDING, JobState.ADMITTED, JobState.DISPATCHED, JobState.RUNNING)


def sweep_request(**fields: Any) -> dict[str, Any]:
    return {
        "name": "lr-search",
        "metric": "loss",
        "direction": "minimize",
        "sampler": "tpe",
        "max_trials": 6,
        "max_parallel": 2,
        "base": {
            "name": "train",
            "command": ["python", "train.py", "--lr", "{lr}", "--opt={opt}"],
            "gpu_model": "a100",
            "gpus_per_node": 1,
            "walltime": 600,
        },
        "space": {
            "lr": {"type": "float", "low": 0.0001, "high": 1.0, "log": True},
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
        },
        **fields,
    }


def token(trial: Trial) -> str:
    trial.refresh_from_db()
    assert trial.job is not None
    return str(trial.job.env["GRID_TRIAL_TOKEN"])


def report(trial: Trial, step: Any, value: Any, key: str | None = None) -> Any:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Trial {key or token(trial)}")
    return client.post(f"/api/v1/sweeps/trials/{trial.pk}/report", {"step": step, "value": value}, format="json")


@pytest.fixture
def run_on_grid(grid: SimulatorBackend) -> Callable[[], None]:
    """Admit and dispatch the waiting trial jobs on the simulated grid."""

    def run() -> None:
        job_services.admit_and_dispatch(grid)

    return run


def end_job(job: Job, state: str) -> None:
    """The job's run ends with `state` (as the backend sync would record it)."""
    job.refresh_from_db()
    for step in (*LIFE[LIFE.index(JobState(job.state)) + 1 :], state):
        assert job_services.transition(job.pk, JobState(step), why="test"), (job.pk, step)


@pytest.fixture(autouse=True)
def on_the_grid(grid: SimulatorBackend) -> SimulatorBackend:
    """Every sweep test runs against the simulated grid's nodes (trial jobs need its GPU models)."""
    return grid
