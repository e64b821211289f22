"""A notebook on the local Slurm cluster: the batch script starts Jupyter on a node with the one-time token,
prints its host:port to the log, the portal finds it, and the proxy reaches it; stopping frees the GPUs."""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import Client
from pytest_django import Settings

from cluster.backends.base import RemoteJobState
from cluster.backends.slurm import SlurmBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from notebooks import launch, services
from notebooks.states import NotebookState
from portal.models import User
from tests.slurm.conftest import sync_until, wait_for

pytestmark = pytest.mark.slurm


@pytest.fixture
def node_python(settings: Settings) -> None:
    # The nodes run jobs as alice, who may not enter the directory the portal's interpreter lives in: the
    # system's Python (the same 3.11) with the portal's packages, which everyone may read.
    site = Path(sysconfig.get_paths()["purelib"])
    settings.NOTEBOOK_NODE_PYTHON = f"env PYTHONPATH={site} /usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    settings.NOTEBOOK_NODE_HOST = "127.0.0.1"  # the dev cluster's nodes all live at this address


def test_a_notebook_starts_on_a_slurm_node_and_is_reached_through_the_proxy(
    slurm_world: SlurmBackend, node_python: None, alice: User, web: Callable[[User | None], Client]
) -> None:
    notebook = services.start(alice, {"team": "vision", "gpu_model": "a100", "gpus": 2, "lifetime_s": 600})
    job = notebook.job
    assert launch.ADDRESS_MARK in job.script and services.token_for(notebook) not in job.script
    job_services.run_admission_cycle()
    job.refresh_from_db()
    assert job.state == JobState.ADMITTED, f"{job.reason}: {job.reason_detail}"
    assert job_services.dispatch(job.pk), Job.objects.filter(pk=job.pk).values("state", "reason_detail", "backend")
    sync_until(job, {JobState.RUNNING})
    wait_for(lambda: services.refresh(notebook.pk) != NotebookState.STARTING, 120, "the server to answer")
    notebook.refresh_from_db()
    assert notebook.state == NotebookState.READY, (notebook.detail, job_services.read_log(job))
    assert notebook.server_url.startswith("http://127.0.0.1:")
    assert services.token_for(notebook) not in "\n".join(job_services.read_log(job))  # the log is the team's to read

    answer = web(alice).get(f"{notebook.proxy_path}api/status")
    assert answer.status_code == 200 and "started" in answer.json()

    services.stop(alice, notebook)
    assert Job.objects.get(pk=job.pk).state == JobState.CANCELLED  # its GPUs are free in the portal at once
    job_services.cancel_on_backend(job.pk)
    wait_for(
        lambda: (remote := slurm_world.find_job(job.pk)) is not None and remote.state == RemoteJobState.CANCELLED,
        60,
        "Slurm to cancel the notebook's job",
    )
