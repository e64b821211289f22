"""Who may open which page: anonymous visitors, teammates, the outsider carol and the operator olivia."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.http.response import HttpResponseBase
from django.test import Client
from pytest_django import Settings

from cluster.models import SimNode
from cluster.simulator.backend import SimulatorBackend
from jobs.models import Job
from jobs.states import JobState
from portal.models import ApiToken, User

LOGIN = "/accounts/login/"
SIGNED_IN_PAGES = ["/", "/jobs/", "/jobs/new/", "/jobs/new/custom/", "/tokens/"]


@pytest.fixture
def alice_job(alice: User, submit: Callable[..., Job]) -> Job:
    return submit(alice, name="vision-alice-resnet")


@pytest.fixture
def bob_job(bob: User, submit: Callable[..., Job]) -> Job:
    return submit(bob, name="vision-bob-vit")


@pytest.fixture
def carol_job(carol: User, submit: Callable[..., Job]) -> Job:
    return submit(carol, name="render-carol-frames")


def assert_sent_to_login(response: HttpResponseBase, path: str) -> None:
    assert response.status_code == 302
    assert response["Location"].startswith(f"{LOGIN}?next=")
    assert path.rstrip("/") in response["Location"]


def state_of(job: Job) -> str:
    return Job.objects.values_list("state", flat=True).get(pk=job.pk)


# Anonymous visitors


@pytest.mark.parametrize("path", [*SIGNED_IN_PAGES, "/jobs/{id}/"])
def test_an_anonymous_visitor_is_sent_to_login_for_every_page(
    web: Callable[[User | None], Client], alice_job: Job, path: str
) -> None:
    path = path.format(id=alice_job.pk)
    assert_sent_to_login(web(None).get(path), path)


@pytest.mark.parametrize("path", ["/jobs/{id}/cancel/", "/jobs/new/custom/", "/tokens/", "/tokens/{token}/revoke/"])
def test_an_anonymous_post_is_sent_to_login_and_changes_nothing(
    web: Callable[[User | None], Client], alice: User, alice_job: Job, path: str
) -> None:
    token, _ = ApiToken.issue(alice, "laptop")
    path = path.format(id=alice_job.pk, token=token.pk)
    jobs_before = Job.objects.count()

    response = web(None).post(path, {"team": "vision", "name": "sneaky", "walltime": "00:10:00"})

    assert_sent_to_login(response, path)
    assert state_of(alice_job) == JobState.PENDING
    assert Job.objects.count() == jobs_before
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 1


def test_an_anonymous_visitor_gets_no_job_data_from_the_login_redirect(
    web: Callable[[User | None], Client], alice_job: Job
) -> None:
    response = web(None).get(f"/jobs/{alice_job.pk}/", follow=True)
    assert alice_job.name.encode() not in response.content


# Signed-in users on their own pages


@pytest.mark.parametrize("path", SIGNED_IN_PAGES)
def test_a_team_member_can_open_every_page(
    web: Callable[[User | None], Client], alice: User, grid: SimulatorBackend, path: str
) -> None:
    assert web(alice).get(path).status_code == 200


def test_the_job_owner_sees_their_job(web: Callable[[User | None], Client], alice: User, alice_job: Job) -> None:
    response = web(alice).get(f"/jobs/{alice_job.pk}/")
    assert response.status_code == 200
    assert alice_job.name.encode() in response.content


def test_a_teammate_sees_a_job_of_their_team(web: Callable[[User | None], Client], bob: User, alice_job: Job) -> None:
    response = web(bob).get(f"/jobs/{alice_job.pk}/")
    assert response.status_code == 200
    assert alice_job.name.encode() in response.content


# The outsider carol and vision's jobs


def test_an_outsider_gets_404_for_another_teams_job(web: Callable[[User | None], Client], carol: User, alice_job: Job) -> None:
    response = web(carol).get(f"/jobs/{alice_job.pk}/")
    assert response.status_code == 404
    assert alice_job.name.encode() not in response.content


def test_an_outsider_gets_404_when_cancelling_another_teams_job_and_it_keeps_running(
    web: Callable[[User | None], Client], carol: User, alice_job: Job
) -> None:
    response = web(carol).post(f"/jobs/{alice_job.pk}/cancel/", {"reason": "mine now"})
    assert response.status_code == 404
    assert state_of(alice_job) == JobState.PENDING


def test_a_job_that_does_not_exist_looks_the_same_as_another_teams_job(
    web: Callable[[User | None], Client], carol: User, alice_job: Job
) -> None:
    missing = web(carol).get(f"/jobs/{alice_job.pk + 1000}/")
    hidden = web(carol).get(f"/jobs/{alice_job.pk}/")
    assert missing.status_code == hidden.status_code == 404


def test_an_outsiders_job_list_shows_only_their_own_teams_jobs(
    web: Callable[[User | None], Client], carol: User, alice_job: Job, bob_job: Job, carol_job: Job
) -> None:
    body = web(carol).get("/jobs/").content.decode()
    assert carol_job.name in body
    assert alice_job.name not in body and bob_job.name not in body
    assert f"/jobs/{alice_job.pk}/" not in body and f"/jobs/{bob_job.pk}/" not in body


def test_an_outsider_cannot_list_another_team_by_filtering_for_it(
    web: Callable[[User | None], Client], carol: User, alice_job: Job
) -> None:
    body = web(carol).get("/jobs/", {"team": "vision"}).content.decode()
    assert alice_job.name not in body
    assert f"/jobs/{alice_job.pk}/" not in body


def test_an_outsiders_dashboard_lists_none_of_another_teams_jobs(
    web: Callable[[User | None], Client], carol: User, alice_job: Job, carol_job: Job
) -> None:
    body = web(carol).get("/").content.decode()
    assert carol_job.name in body
    assert alice_job.name not in body


def test_a_team_members_job_list_shows_the_whole_team_but_not_others(
    web: Callable[[User | None], Client], alice: User, alice_job: Job, bob_job: Job, carol_job: Job
) -> None:
    body = web(alice).get("/jobs/").content.decode()
    assert alice_job.name in body and bob_job.name in body
    assert carol_job.name not in body


def test_a_user_in_no_team_sees_no_jobs(
    web: Callable[[User | None], Client], fiona: User, alice_job: Job, carol_job: Job
) -> None:
    body = web(fiona).get("/jobs/").content.decode()
    assert alice_job.name not in body and carol_job.name not in body
    assert web(fiona).get(f"/jobs/{alice_job.pk}/").status_code == 404


# Submitting


def test_a_member_can_submit_from_a_template_page(
    web: Callable[[User | None], Client], alice: User, grid: SimulatorBackend
) -> None:
    response = web(alice).post(
        "/jobs/new/custom/",
        {"team": "vision", "name": "from-the-form", "gpu_model": "a100", "gpus_per_node": 1, "nodes": 1,
         "priority": "standard", "walltime": "00:10:00", "command": "python\ntrain.py"},
    )  # fmt: skip
    job = Job.objects.get(name="from-the-form")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.team.slug == "vision" and job.owner == alice


def test_an_outsider_cannot_submit_into_another_team_from_the_form(
    web: Callable[[User | None], Client], carol: User, grid: SimulatorBackend
) -> None:
    response = web(carol).post(
        "/jobs/new/custom/",
        {"team": "vision", "name": "into-vision", "gpu_model": "a100", "gpus_per_node": 1, "nodes": 1,
         "priority": "standard", "walltime": "00:10:00", "command": "python\ntrain.py"},
    )  # fmt: skip
    assert response.status_code == 200
    assert "team" in response.context["form"].errors
    assert not Job.objects.filter(name="into-vision").exists()


def test_a_user_in_no_team_is_turned_away_from_the_submit_form(
    web: Callable[[User | None], Client], fiona: User, grid: SimulatorBackend
) -> None:
    response = web(fiona).post("/jobs/new/custom/", {"team": "vision", "name": "nowhere", "walltime": "00:10:00"})
    assert response.status_code == 302 and response["Location"] == "/jobs/"
    assert not Job.objects.filter(name="nowhere").exists()


# Cancelling within a team


def test_the_owner_can_cancel_their_job(web: Callable[[User | None], Client], alice: User, alice_job: Job) -> None:
    response = web(alice).post(f"/jobs/{alice_job.pk}/cancel/")
    assert response.status_code == 302
    assert state_of(alice_job) == JobState.CANCELLED


def test_a_team_lead_can_cancel_a_researchers_job(web: Callable[[User | None], Client], bob: User, alice_job: Job) -> None:
    response = web(bob).post(f"/jobs/{alice_job.pk}/cancel/", {"reason": "over budget"})
    assert response.status_code == 302
    assert state_of(alice_job) == JobState.CANCELLED


def test_a_researcher_cannot_cancel_their_leads_job(web: Callable[[User | None], Client], alice: User, bob_job: Job) -> None:
    response = web(alice).post(f"/jobs/{bob_job.pk}/cancel/")
    assert response.status_code == 403
    assert state_of(bob_job) == JobState.PENDING


def test_the_cancel_button_is_shown_only_to_those_who_may_cancel(
    web: Callable[[User | None], Client], alice: User, bob: User, bob_job: Job
) -> None:
    assert b'id="cancel-form"' in web(bob).get(f"/jobs/{bob_job.pk}/").content
    assert b'id="cancel-form"' not in web(alice).get(f"/jobs/{bob_job.pk}/").content


def test_cancel_only_accepts_post(web: Callable[[User | None], Client], alice: User, alice_job: Job) -> None:
    assert web(alice).get(f"/jobs/{alice_job.pk}/cancel/").status_code == 405
    assert state_of(alice_job) == JobState.PENDING


# The operator


def test_the_operator_sees_every_teams_jobs(
    web: Callable[[User | None], Client], olivia: User, alice_job: Job, carol_job: Job
) -> None:
    body = web(olivia).get("/jobs/").content.decode()
    assert alice_job.name in body and carol_job.name in body
    assert web(olivia).get(f"/jobs/{carol_job.pk}/").status_code == 200


def test_the_operator_can_cancel_any_job(web: Callable[[User | None], Client], olivia: User, carol_job: Job) -> None:
    response = web(olivia).post(f"/jobs/{carol_job.pk}/cancel/", {"reason": "node maintenance"})
    assert response.status_code == 302
    assert state_of(carol_job) == JobState.CANCELLED


# API tokens page


def test_the_tokens_page_lists_only_your_own_tokens(web: Callable[[User | None], Client], alice: User, carol: User) -> None:
    ApiToken.issue(alice, "alice-laptop")
    ApiToken.issue(carol, "carol-workstation")
    body = web(alice).get("/tokens/").content.decode()
    assert "alice-laptop" in body
    assert "carol-workstation" not in body


def test_revoking_another_users_token_does_nothing(web: Callable[[User | None], Client], alice: User, carol: User) -> None:
    token, _ = ApiToken.issue(alice, "alice-laptop")
    response = web(carol).post(f"/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is None


def test_you_can_revoke_your_own_token(web: Callable[[User | None], Client], alice: User) -> None:
    token, _ = ApiToken.issue(alice, "alice-laptop")
    web(alice).post(f"/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_revoke_only_accepts_post(web: Callable[[User | None], Client], alice: User) -> None:
    token, _ = ApiToken.issue(alice, "alice-laptop")
    assert web(alice).get(f"/tokens/{token.pk}/revoke/").status_code == 405
    token.refresh_from_db()
    assert token.revoked_at is None


# Simulated grid telemetry


@pytest.fixture
def node(grid: SimulatorBackend) -> str:
    name = SimNode.objects.values_list("name", flat=True).first()
    assert name, "the small grid should have simulated nodes"
    return name


@pytest.mark.parametrize("persona", [None, "alice", "carol", "fiona"])
@pytest.mark.parametrize("path", ["/sim/metrics", "/sim/nodes/{node}/metrics"])
def test_grid_telemetry_is_refused_to_everyone_but_operators_and_the_scraper(
    request: pytest.FixtureRequest, web: Callable[[User | None], Client], node: str, persona: str | None, path: str
) -> None:
    user = request.getfixturevalue(persona) if persona else None
    response = web(user).get(path.format(node=node))
    assert response.status_code == 403
    assert b"DCGM_FI" not in response.content


@pytest.mark.parametrize("path", ["/sim/metrics", "/sim/nodes/{node}/metrics"])
def test_the_operator_can_read_grid_telemetry(web: Callable[[User | None], Client], olivia: User, node: str, path: str) -> None:
    response = web(olivia).get(path.format(node=node))
    assert response.status_code == 200
    assert b"DCGM_FI" in response.content


@pytest.mark.parametrize("path", ["/sim/metrics", "/sim/nodes/{node}/metrics"])
def test_the_scraper_reads_telemetry_only_with_the_right_token(
    web: Callable[[User | None], Client], node: str, settings: Settings, path: str
) -> None:
    settings.METRICS_TOKEN = "scrape-secret"
    path = path.format(node=node)
    assert web(None).get(path, HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    assert web(None).get(path, HTTP_AUTHORIZATION="Bearer scrape-guess").status_code == 403


def test_an_empty_scrape_token_setting_lets_no_bearer_in(
    web: Callable[[User | None], Client], node: str, settings: Settings
) -> None:
    settings.METRICS_TOKEN = ""
    assert web(None).get("/sim/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


# Health and API documentation


def test_healthz_is_public_and_reveals_no_job_team_or_user_data(
    web: Callable[[User | None], Client], alice_job: Job, carol_job: Job
) -> None:
    response = web(None).get("/healthz")
    assert response.status_code in (200, 503)
    body = response.json()
    assert set(body) == {"ok", "status", "failing", "checks"}
    assert set(body["checks"]) == {"database", "broker", "worker", "backend", "loops"}
    assert all(set(check) == {"ok"} for check in body["checks"].values())  # no error details for anonymous callers
    text = response.content.decode()
    for private in (alice_job.name, carol_job.name, "vision", "render", "alice", "carol"):
        assert private not in text


def test_an_anonymous_visitor_is_refused_the_api_schema_and_sent_to_sign_in_for_the_docs(
    web: Callable[[User | None], Client],
) -> None:
    assert web(None).get("/api/schema/").status_code == 401
    docs = web(None).get("/api/docs/")
    assert docs.status_code == 302 and docs["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_a_signed_in_user_can_read_the_api_schema_and_docs(web: Callable[[User | None], Client], alice: User, path: str) -> None:
    assert web(alice).get(path).status_code == 200


def test_the_api_schema_names_no_team_job_or_user(
    web: Callable[[User | None], Client], alice: User, alice_job: Job, carol_job: Job
) -> None:
    text = web(alice).get("/api/schema/").content.decode()
    assert "/api/v1/jobs/" in text
    for private in (alice_job.name, carol_job.name, "vision", "alice", "carol"):
        # Whole words only: the burst state "provisioning" contains the team name "vision".
        assert not re.search(rf"\b{re.escape(private)}\b", text), private
