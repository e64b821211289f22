"""The job list read one team at a time (jobs/listing.py) shows exactly what the visible queryset shows, page by page."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from jobs.listing import MAX_TEAM_ARMS, fetch_by_team
from jobs.models import Job
from jobs.states import JobState
from portal.models import Membership, Team, User

TEAMS = 5
STATES = [JobState.SUCCEEDED, JobState.RUNNING, JobState.PENDING, JobState.FAILED]


@pytest.fixture
def teams(db: None) -> list[Team]:
    return [Team.objects.create(slug=f"team-{i}", name=f"Team {i}") for i in range(TEAMS)]


@pytest.fixture
def jobs(teams: list[Team]) -> list[Job]:
    """Teams 0-2 hold the oldest ids (clustered, then interleaved), teams 3-4 the newest: every cursor crosses teams."""
    owner = User.objects.create_user(username="owner")
    layout = [0] * 17 + [1] * 5 + [2] * 16 + [0, 1, 2] * 4 + [3, 4] * 9 + [1] + [3] * 3
    rows = [
        Job(
            team=teams[t], owner=owner, name=f"run-{n}" if n % 3 else f"eval-{n}", gpu_model="a100",
            gpus_per_node=1, gpus=1, walltime_s=600, state=STATES[n % len(STATES)],
        )
        for n, t in enumerate(layout)
    ]  # fmt: skip
    return Job.objects.bulk_create(rows)


def member_of(name: str, teams: list[Team]) -> User:
    user = User.objects.create_user(username=name)
    for team in teams:
        Membership.objects.create(user=user, team=team)
    return user


def walk(client: APIClient, url: str) -> list[list[int]]:
    """Every page's ids, following `next` from `url`."""
    pages = []
    while url:
        body = client.get(url).json()
        pages.append([job["id"] for job in body["results"]])
        url = body["next"]
    return pages


def chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]


def plain(user: User, **filters: Any) -> list[int]:
    return list(Job.objects.visible_to(user).filter(**filters).order_by("-id").values_list("id", flat=True))


@pytest.mark.parametrize("count", [1, 2, 3, TEAMS])
@pytest.mark.parametrize("page_size", [1, 4, 7, 50])
def test_a_member_of_n_teams_pages_through_exactly_the_visible_jobs(
    count: int, page_size: int, teams: list[Team], jobs: list[Job], api: Callable[[User | None], APIClient]
) -> None:
    user = member_of("member", teams[:count])
    pages = walk(api(user), f"/api/v1/jobs/?page_size={page_size}")
    assert pages == chunks(plain(user), page_size)


def test_the_previous_links_walk_back_over_the_same_pages(
    teams: list[Team], jobs: list[Job], api: Callable[[User | None], APIClient]
) -> None:
    user = member_of("member", teams[:3])
    client = api(user)
    forward, url = [], "/api/v1/jobs/?page_size=4"
    while url:
        body = client.get(url).json()
        forward.append(([job["id"] for job in body["results"]], body["previous"]))
        url = body["next"]
    for (ids, previous), (earlier, _) in zip(forward[1:], forward[:-1], strict=True):
        assert ids and [job["id"] for job in client.get(previous).json()["results"]] == earlier


@pytest.mark.parametrize(
    ("query", "filters"),
    [
        ("state=running", {"state": JobState.RUNNING}),
        ("q=eval", {"name__icontains": "eval"}),
        ("team=team-1", {"team__slug": "team-1"}),
        ("team=team-4", {"team__slug": "team-4"}),
        ("team=nobody", {"team__slug": "nobody"}),
        ("mine=1", {"owner__username": "member"}),
    ],
)
def test_the_list_filters_apply_to_every_team(
    query: str, filters: dict[str, Any], teams: list[Team], jobs: list[Job], api: Callable[[User | None], APIClient]
) -> None:
    for user in (member_of("member", teams[:3]), User.objects.create_user(username="op", is_operator=True)):
        pages = walk(api(user), f"/api/v1/jobs/?page_size=3&{query}")
        assert pages == chunks(plain(user, **filters), 3), (user.username, query)


def test_an_outsider_sees_nothing_of_other_teams(
    teams: list[Team], jobs: list[Job], api: Callable[[User | None], APIClient]
) -> None:
    loner = member_of("loner", [])
    assert walk(api(loner), "/api/v1/jobs/") == [[]]
    assert walk(api(loner), "/api/v1/jobs/?team=team-0") == [[]]
    team_four = member_of("four", [teams[4]])
    seen = {i for page in walk(api(team_four), "/api/v1/jobs/?page_size=5&team=team-0") for i in page}
    assert seen == set()
    seen = {i for page in walk(api(team_four), "/api/v1/jobs/?page_size=5") for i in page}
    assert seen == {job.pk for job in jobs if job.team_id == teams[4].pk}
    assert api(None).get("/api/v1/jobs/").status_code in (401, 403)


def test_an_operator_pages_over_every_team(teams: list[Team], jobs: list[Job], api: Callable[[User | None], APIClient]) -> None:
    operator = User.objects.create_user(username="op", is_operator=True)
    assert walk(api(operator), "/api/v1/jobs/?page_size=6") == chunks([job.pk for job in reversed(jobs)], 6)


@pytest.mark.postgres
def test_a_member_s_page_is_read_one_team_at_a_time_from_ids(
    teams: list[Team], jobs: list[Job], api: Callable[[User | None], APIClient]
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the per-team arms need PostgreSQL (SQLite allows no LIMIT inside a UNION)")
    user = member_of("member", teams[:3])
    client = api(user)
    client.get("/api/v1/jobs/")
    with CaptureQueriesContext(connection) as captured:
        assert len(client.get("/api/v1/jobs/?page_size=5").json()["results"]) == 5
    job_queries = [q["sql"] for q in captured.captured_queries if "jobs_job" in q["sql"]]
    assert len(job_queries) == 2, job_queries  # the ids through the per-team arms, then the page's rows
    ids_query, rows_query = job_queries
    assert ids_query.count("UNION ALL") == 2 and "password" not in rows_query and "script" not in rows_query


def test_fetch_by_team_matches_slicing_for_any_window_and_direction(teams: list[Team], jobs: list[Job]) -> None:
    user = member_of("member", teams[:4])
    team_ids = [t.pk for t in teams[:4]]
    rng = random.Random(7)
    for _ in range(60):
        ordering = rng.choice(["-id", "id"])
        bound = rng.choice(jobs).pk
        visible = Job.objects.visible_to(user).order_by(ordering)
        visible = visible.filter(id__lt=bound) if ordering == "-id" else visible.filter(id__gt=bound)
        start = rng.randrange(0, 4)
        stop = start + rng.randrange(1, 12)
        expected = [job.pk for job in visible[start:stop]]
        assert [job.pk for job in fetch_by_team(visible, team_ids, start, stop)] == expected


def test_a_member_of_very_many_teams_gets_the_single_query(
    teams: list[Team], jobs: list[Job], api: Callable[[User | None], APIClient]
) -> None:
    many = [Team.objects.create(slug=f"extra-{i}", name=f"Extra {i}") for i in range(MAX_TEAM_ARMS)]
    user = member_of("member", teams[:2] + many)
    client = api(user)
    with CaptureQueriesContext(connection) as captured:
        pages = walk(client, "/api/v1/jobs/?page_size=9")
    assert pages == chunks(plain(user), 9)
    assert not any("UNION" in q["sql"] for q in captured.captured_queries)


@pytest.mark.parametrize("count", [1, 3])
def test_the_job_list_page_shows_the_same_jobs_page_by_page(
    count: int, teams: list[Team], jobs: list[Job], web: Callable[[User | None], Any], settings: Any
) -> None:
    user = member_of("member", teams[:count])
    client = web(user)
    expected = chunks(plain(user), 25)
    for number, ids in enumerate(expected, start=1):
        page = client.get(f"/jobs/?page={number}").context["page"]
        assert [job.pk for job in page] == ids and page.paginator.count == len(plain(user))
    filtered = client.get("/jobs/?state=running&team=team-0").context["page"]
    assert [job.pk for job in filtered] == plain(user, state=JobState.RUNNING, team__slug="team-0")[:25]
    assert list(client.get("/jobs/?state=bogus").context["page"]) == []
    assert list(web(member_of("loner", [])).get("/jobs/").context["page"]) == []
