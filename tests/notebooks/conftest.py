"""Notebooks on the simulated grid: a request to start from, driving the job to running, and a real local
Jupyter server behind each ready notebook (stopped after the test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_django import Settings

from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from notebooks import servers, services
from notebooks.models import Notebook
from notebooks.states import NotebookState
from portal.models import User
from tests.k8s.conftest import fake, portal_on_fake  # noqa: F401  (the fake Kubernetes API server, for test_kubernetes.py)


def notebook_request(**fields: Any) -> dict[str, Any]:
    return {"team": "vision", "gpu_model": "a100", "gpus": 1, "lifetime_s": 3600, **fields}


def run_jobs() -> None:
    """Admit, dispatch and sync on the simulated grid, as the portal's cycles do."""
    job_services.run_admission_cycle()
    for job_id in Job.objects.filter(state=JobState.ADMITTED).values_list("id", flat=True):
        job_services.dispatch(job_id)
    job_services.sync_jobs()


@pytest.fixture(autouse=True)
def notebook_work_dir(settings: Settings, tmp_path: Path) -> None:
    settings.NOTEBOOK_WORK_DIR = str(tmp_path / "notebooks")


@pytest.fixture
def start_ready(grid: SimulatorBackend, alice: User) -> Iterator[Callable[..., Notebook]]:
    """Start a notebook as `user` (alice by default) and wait until its local server answers."""
    started: list[Notebook] = []

    def start(user: User | None = None, **fields: Any) -> Notebook:
        notebook = services.start(user or alice, notebook_request(**fields))
        started.append(notebook)
        run_jobs()
        assert services.wait_ready(notebook.pk, timeout_s=60) == NotebookState.READY
        notebook.refresh_from_db()
        return notebook

    yield start
    for notebook in started:
        notebook.refresh_from_db()
        if notebook.server_pid:
            servers.stop_local_server(notebook.server_pid, notebook.pk)
