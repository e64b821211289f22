"""A team and a user can only have so many jobs waiting; concurrent submits cannot squeeze past."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from pytest_django import Settings
from rest_framework.test import APIClient

from jobs import services as job_services
from jobs.models import Job
from jobs.spec import SpecError
from jobs.states import JobState
from portal.models import User
from tests.jobs.test_concurrency import in_threads

BODY = {"name": "wait", "command": ["sleep", "1"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}


def test_the_user_limit_names_the_field_the_count_and_the_limit(
    settings: Settings, grid: Any, alice: User, api: Callable[[User | None], APIClient]
) -> None:
    settings.MAX_PENDING_JOBS_PER_USER = 5
    ok = api(alice).post("/api/v1/jobs/", {**BODY, "array": "4"}, format="json")
    assert ok.status_code == 201
    refused = api(alice).post("/api/v1/jobs/", {**BODY, "array": "2"}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"pending_jobs": ["you have 4 jobs waiting; 2 more would pass your limit of 5"]}
    assert Job.objects.filter(owner=alice).count() == 4  # nothing half-submitted


def test_the_team_limit_counts_every_member_and_frees_up_when_jobs_leave_the_queue(
    settings: Settings, grid: Any, alice: User, bob: User
) -> None:
    settings.MAX_PENDING_JOBS_PER_TEAM = 3
    for who in (alice, bob, alice):
        job_services.submit(who, dict(BODY))
    with pytest.raises(SpecError) as caught:
        job_services.submit(bob, dict(BODY))
    assert "your team has 3 jobs waiting" in caught.value.errors["pending_jobs"][0]
    Job.objects.filter(owner=bob).update(state=JobState.RUNNING)  # no longer waiting
    assert job_services.submit(bob, dict(BODY))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_cannot_together_pass_the_limit(settings: Settings) -> None:
    from cluster import services as cluster_services
    from cluster.simulator.backend import SimulatorBackend
    from cluster.simulator.model import parse_pools
    from portal.models import Membership, Team
    from tests.conftest import TEST_POOLS

    cluster_services.sync_nodes(SimulatorBackend(pools=parse_pools(TEST_POOLS), speed=1.0, failure_rate=0.0))
    team = Team.objects.create(slug="rush", name="Rush")
    users = [User.objects.create_user(f"rush{i}", password="x") for i in range(4)]
    for user in users:
        Membership.objects.create(user=user, team=team)
    settings.MAX_PENDING_JOBS_PER_TEAM = 10
    settings.DEFAULT_TEAM_GPU_LIMIT = 0  # nothing is admitted: every accepted job stays waiting
    accepted: list[int] = []

    def burst(user: User) -> Callable[[], None]:
        def run() -> None:
            for _ in range(5):
                with contextlib.suppress(SpecError):
                    accepted.extend(job.pk for job in job_services.submit(user, {**BODY, "team": "rush"}))

        return run

    assert in_threads([burst(u) for u in users]) == []
    assert len(accepted) == 10
    assert Job.objects.filter(team=team, state=JobState.PENDING).count() == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_user_submitting_to_several_teams_at_once_cannot_pass_the_user_limit(settings: Settings) -> None:
    from cluster import services as cluster_services
    from cluster.simulator.backend import SimulatorBackend
    from cluster.simulator.model import parse_pools
    from portal.models import Membership, Team
    from tests.conftest import TEST_POOLS

    cluster_services.sync_nodes(SimulatorBackend(pools=parse_pools(TEST_POOLS), speed=1.0, failure_rate=0.0))
    user = User.objects.create_user("spread", password="x")
    teams = [Team.objects.create(slug=f"spread-{i}", name=f"Spread {i}") for i in range(4)]
    for team in teams:
        Membership.objects.create(user=user, team=team)
    settings.MAX_PENDING_JOBS_PER_USER = 6
    settings.DEFAULT_TEAM_GPU_LIMIT = 0  # nothing is admitted: every accepted job stays waiting
    accepted: list[int] = []

    def burst(team: str, array: str | None) -> Callable[[], None]:
        def run() -> None:
            for _ in range(4):
                with contextlib.suppress(SpecError):
                    body = {**BODY, "team": team, **({"array": array} if array else {})}
                    accepted.extend(job.pk for job in job_services.submit(user, body))

        return run

    # single submits (one statement) and arrays (the ORM path) into four teams at once
    assert in_threads([burst(t.slug, "2" if i % 2 else None) for i, t in enumerate(teams)]) == []
    assert Job.objects.filter(owner=user, state=JobState.PENDING).count() == len(accepted) <= 6
    assert len(accepted) >= 5  # the limit was reached, not missed


def test_a_queue_put_far_past_the_limit_by_an_import_is_refused_with_its_count(
    settings: Settings, grid: Any, alice: User
) -> None:
    settings.MAX_PENDING_JOBS_PER_USER = 3
    settings.MAX_PENDING_JOBS_PER_TEAM = 1000
    first = job_services.submit(alice, {**BODY, "array": "3"})
    Job.objects.bulk_create(  # an operator's import put the queue far past the limit
        [
            Job(owner=alice, team=first[0].team, name=f"old-{i}", gpu_model="a100", gpus_per_node=1, gpus=1, walltime_s=600)
            for i in range(20)
        ]
    )
    with pytest.raises(SpecError) as caught:
        job_services.submit(alice, dict(BODY))
    assert caught.value.errors == {"pending_jobs": ["you have 23 jobs waiting; 1 more would pass your limit of 3"]}
