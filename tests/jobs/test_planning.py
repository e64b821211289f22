"""What-if planning: operators replay recent real submissions on the grid as it is and as it might be."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks

from cluster.simulator.backend import SimulatorBackend
from jobs import planning
from jobs.models import Job, WhatIfRun
from portal.models import User


@pytest.fixture
def history(alice: User, carol: User, grid: SimulatorBackend) -> None:
    """A busy day: 40 one-node jobs of 8 A100s, an hour each, all submitted within two hours."""
    now = timezone.now()
    for i in range(40):
        owner = alice if i % 2 else carol
        submitted = now - timedelta(days=1) + timedelta(minutes=3 * i)
        Job.objects.create(
            team=owner.teams.get(), owner=owner, name=f"h{i}", command=["x"], gpu_model="a100", gpus_per_node=8,
            gpus=8, walltime_s=7200, submitted_at=submitted, started_at=submitted + timedelta(minutes=1),
            finished_at=submitted + timedelta(hours=1, minutes=1), state="succeeded",
        )  # fmt: skip


def test_more_nodes_and_limits_shorten_the_waits_of_the_same_submissions(
    olivia: User, history: None, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    overrides = {"vision": {"guarantee": 8, "limit": 48}, "render": {"guarantee": 8, "limit": 48}}
    with django_capture_on_commit_callbacks(execute=True):
        run = planning.start(olivia, "a100", days=2, add_nodes=4, quota_overrides=overrides)
    run.refresh_from_db()
    assert run.state == "done" and run.progress == 1.0 and run.jobs_replayed == 40
    assert run.result is not None
    now, scenario = run.result["now"], run.result["scenario"]
    assert run.result["nodes"] == {"now": 2, "scenario": 6}
    assert now["completed"] == scenario["completed"] == 40
    assert scenario["mean_wait_s"] < now["mean_wait_s"] / 2
    assert now["limit_violations"] == scenario["limit_violations"] == 0
    assert now["per_team"]["vision"]["mean_wait_s"] > 0
    figures = planning.charts(run.result)
    assert [t["name"] for t in figures["waits"]["data"]] == ["now", "scenario"]


def test_nodes_alone_do_not_help_teams_held_back_by_their_limits(olivia: User, history: None) -> None:
    run = WhatIfRun.objects.create(requested_by=olivia, gpu_model="a100", days=2, add_nodes=4)
    planning.execute(run.pk)
    run.refresh_from_db()
    assert run.result is not None
    vision_now = run.result["now"]["per_team"]["vision"]["mean_wait_s"]
    vision_more_nodes = run.result["scenario"]["per_team"]["vision"]["mean_wait_s"]
    assert vision_more_nodes > 0.5 * vision_now  # vision's 12-GPU limit still runs one 8-GPU job at a time


def test_progress_is_reported_while_it_runs(olivia: User, history: None, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    real = planning._progress_reporter

    def spy(run_id: int, offset: float) -> Callable[[float], None]:
        report = real(run_id, offset)

        def wrapped(fraction: float) -> None:
            report(fraction)
            seen.append(WhatIfRun.objects.get(pk=run_id).progress)

        return wrapped

    monkeypatch.setattr(planning, "_progress_reporter", spy)
    run = WhatIfRun.objects.create(requested_by=olivia, gpu_model="a100", days=2, add_nodes=1)
    planning.execute(run.pk)
    assert seen == sorted(seen) and 0.4 < max(seen) <= 1.0 and len(set(seen)) > 5


def test_bad_requests_name_the_field(olivia: User, grid: SimulatorBackend) -> None:
    with pytest.raises(planning.PlanningError) as caught:
        planning.start(olivia, "b200", days=400, add_nodes=-50, quota_overrides={"vision": {"guarantee": 9, "limit": 2}})
    assert {"gpu_model", "days", "add_nodes", "quota_overrides"} <= set(caught.value.errors)
    assert not WhatIfRun.objects.exists()


def test_a_run_is_executed_once_even_if_delivered_twice(olivia: User, history: None) -> None:
    run = WhatIfRun.objects.create(requested_by=olivia, gpu_model="a100", days=2, add_nodes=1)
    planning.execute(run.pk)
    first = WhatIfRun.objects.get(pk=run.pk).result
    planning.execute(run.pk)
    assert WhatIfRun.objects.get(pk=run.pk).result == first


def test_only_operators_reach_planning(
    web: Callable[[User | None], Client], alice: User, bob: User, olivia: User, grid: SimulatorBackend
) -> None:
    run = WhatIfRun.objects.create(requested_by=olivia, gpu_model="a100", days=1)
    for url in ("/planning/", f"/planning/{run.pk}/", f"/planning/{run.pk}/status"):
        assert web(alice).get(url).status_code == 404
        assert web(bob).get(url).status_code == 404
        assert web(None).get(url).status_code == 302
        assert web(olivia).get(url).status_code == 200
    response = web(olivia).post("/planning/", {"gpu_model": "a100", "days": "1", "add_nodes": "2"})
    assert response.status_code == 302 and WhatIfRun.objects.count() == 2
