"""Starting, following and stopping notebooks: a notebook is a job of its team, and ends with it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.models import Job, JobKind
from jobs.spec import SpecError
from jobs.states import JobState
from notebooks import launch, services
from notebooks.models import Notebook, NotebookEvent
from notebooks.states import EndReason, EventKind, NotebookState
from portal.models import User
from tests.notebooks.conftest import notebook_request, run_jobs


def test_it_starts_a_notebook_as_an_interactive_job_of_the_team(grid: SimulatorBackend, alice: User) -> None:
    notebook = services.start(alice, notebook_request(gpus=2, lifetime_s=1800, priority="standard"))
    job = notebook.job
    assert (job.kind, job.team.slug, job.owner, job.gpus, job.walltime_s) == (JobKind.INTERACTIVE, "vision", alice, 2, 1800)
    assert job.state == JobState.PENDING and notebook.state == NotebookState.STARTING
    assert notebook.token_hash and services.token_for(notebook) not in str(job.env)
    assert NotebookEvent.objects.filter(notebook=notebook, kind=EventKind.STARTED).exists()


def test_the_token_reaches_the_job_only_in_its_dispatch_environment(grid: SimulatorBackend, alice: User) -> None:
    notebook = services.start(alice, notebook_request())
    env = job_services.job_request(notebook.job).env
    assert env[launch.TOKEN_ENV] == services.token_for(notebook)
    assert env[launch.BASE_URL_ENV] == f"/notebooks/{notebook.pk}/proxy/"
    assert launch.TOKEN_ENV not in Job.objects.get(pk=notebook.job_id).env


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"lifetime_s": 10}, "lifetime_s", "between 60 and"),
        ({"lifetime_s": 10**9}, "lifetime_s", "between 60 and"),
        ({"gpus": 0}, "gpus", "between 1 and"),
        ({"gpus": "two"}, "gpus", "whole number"),
        ({"server_type": "emacs"}, "server_type", "must be one of jupyter"),
        ({"colour": "red"}, "colour", "is not a notebook field"),
        ({"team": "render"}, "team", ""),
        ({"gpu_model": "z9000"}, "gpu_model", ""),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_made(
    grid: SimulatorBackend, alice: User, fields: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(SpecError) as refused:
        services.start(alice, notebook_request(**fields))
    assert field in refused.value.errors and says in " ".join(refused.value.errors[field])
    assert not Notebook.objects.exists() and not Job.objects.exists()


def test_it_becomes_ready_when_its_job_runs_and_the_server_answers(start_ready: Callable[..., Notebook]) -> None:
    notebook = start_ready()
    assert notebook.state == NotebookState.READY and notebook.job.state == JobState.RUNNING
    assert notebook.server_url.startswith("http://127.0.0.1:") and notebook.ready_at and notebook.last_activity
    # The server wants the token: without it the API refuses.
    assert httpx.get(f"{notebook.server_url}{notebook.proxy_path}api/status").status_code == 403


def test_stopping_cancels_the_job_at_once_and_stops_the_server(start_ready: Callable[..., Notebook], alice: User) -> None:
    notebook = start_ready()
    pid = notebook.server_pid
    assert pid is not None
    notebook.server_pid = None  # read before the server started (as the form's redirect target was): stop still finds it
    services.stop(alice, notebook)
    notebook.refresh_from_db()
    job = Job.objects.get(pk=notebook.job_id)
    assert (notebook.state, notebook.end_reason, job.state) == (NotebookState.ENDED, EndReason.STOPPED, JobState.CANCELLED)
    assert job.state not in {JobState.ADMITTED, JobState.RUNNING}  # its GPUs count as free in the next cycle
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the local server is still running")


def test_another_member_may_not_stop_it_but_an_operator_may(grid: SimulatorBackend, alice: User, bob: User, olivia: User) -> None:
    notebook = services.start(alice, notebook_request())
    with pytest.raises(services.NotebookActionError, match="owner or an operator"):
        services.stop(bob, notebook)
    services.stop(olivia, notebook)
    assert Job.objects.get(pk=notebook.job_id).state == JobState.CANCELLED


def test_a_notebook_whose_job_ended_ends_too(grid: SimulatorBackend, alice: User) -> None:
    notebook = services.start(alice, notebook_request())
    run_jobs()
    job_services.cancel(alice, Job.objects.get(pk=notebook.job_id), "from the job page")
    assert services.refresh(notebook.pk) == NotebookState.ENDED
    notebook.refresh_from_db()
    assert notebook.end_reason == EndReason.JOB_ENDED


def test_a_server_that_never_answers_fails_the_notebook_after_the_start_timeout(
    grid: SimulatorBackend, alice: User, settings: object
) -> None:
    notebook = services.start(alice, notebook_request())
    run_jobs()
    Notebook.objects.filter(pk=notebook.pk).update(server_url="http://127.0.0.1:9")  # nothing listens there
    Job.objects.filter(pk=notebook.job_id).update(started_at=notebook.created_at.replace(year=2000))
    assert services.refresh(notebook.pk) == NotebookState.ENDED
    notebook.refresh_from_db()
    assert notebook.end_reason == EndReason.FAILED and "did not answer" in notebook.detail
    assert Job.objects.get(pk=notebook.job_id).state == JobState.CANCELLED
