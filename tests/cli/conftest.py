"""gridctl against a live portal: pytest-django's live server on PostgreSQL, with the simulated grid.

`cli(...)` runs gridctl's main function in-process with argv and returns (exit code, stdout, stderr);
the config file lives in the test's own folder and GRID_URL/GRID_TOKEN are cleared, so nothing of the
machine's own gridctl set-up is read. `advance()` drives the grid (admission, dispatch, sync) and is
what gridctl's waits call instead of sleeping, so `wait` and `logs -f` see the job move without timing.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from gridctl import client as gridctl_client
from gridctl import logs as gridctl_logs
from gridctl.main import main
from pytest_django.live_server_helper import LiveServer

from cluster.models import SimJob
from cluster.simulator.backend import SimulatorBackend
from jobs import services
from jobs.models import Job, JobTemplate
from jobs.states import JobState
from portal.models import ApiToken, User
from tests.jobs.test_lifecycle import run_cycle as run_cycle  # the grid one step: admit, dispatch, sync

pytestmark = [pytest.mark.postgres]


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GRID_URL", "GRID_TOKEN", "GRIDCTL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "gridctl" / "config.yaml"


@pytest.fixture
def templates(db: None) -> None:
    """The templates the data migration makes (a transactional test's flush removes them)."""
    migration = importlib.import_module("jobs.migrations.0003_templates")
    for data in migration.TEMPLATES:
        JobTemplate.objects.update_or_create(slug=data["slug"], defaults=data)


@pytest.fixture
def portal(live_server: LiveServer, grid: SimulatorBackend, templates: None) -> str:
    return str(live_server.url)


def token_for(user: User) -> str:
    return ApiToken.issue(user, "gridctl tests")[1]


@pytest.fixture
def cli(portal: str) -> Cli:
    """gridctl in-process; `as_user` signs the call in with a fresh token of that user via --url/--token."""

    def run(*argv: str, as_user: User | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        prefix = ["--url", portal, "--token", token_for(as_user)] if as_user is not None else []
        code = main([*prefix, *argv], out=out, err=err)
        return Result(code, out.getvalue(), err.getvalue())

    return run


def finish_running() -> None:
    SimJob.objects.filter(state="running").update(ends_at=timezone.now() - timedelta(seconds=1))
    services.sync_jobs()


@pytest.fixture
def advance(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """gridctl's waits run the grid one step instead of sleeping: admit and start, then finish. The list
    records the waits asked for."""
    asked: list[float] = []

    def step(seconds: float) -> None:
        asked.append(seconds)
        if Job.objects.filter(state__in=[JobState.PENDING, JobState.REQUEUED]).exists():
            run_cycle()
        else:
            finish_running()

    monkeypatch.setattr(gridctl_logs, "sleep", step)
    monkeypatch.setattr(gridctl_client, "sleep", step)
    yield asked
