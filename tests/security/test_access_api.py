"""Who may call which API endpoint: no credentials, a revoked token, the outsider carol, teammates, the operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from cluster.models import Node
from cluster.simulator.backend import SimulatorBackend
from cluster.states import NodeState
from jobs.models import Job
from jobs.states import JobState
from portal.models import ApiToken, User

V1 = "/api/v1"


@pytest.fixture
def alice_job(alice: User, submit: Callable[..., Job]) -> Job:
    return submit(alice, name="vision-alice-resnet")


@pytest.fixture
def bob_job(bob: User, submit: Callable[..., Job]) -> Job:
    return submit(bob, name="vision-bob-vit")


@pytest.fixture
def carol_job(carol: User, submit: Callable[..., Job]) -> Job:
    return submit(carol, name="render-carol-frames")


@pytest.fixture
def node(grid: SimulatorBackend) -> Node:
    node = Node.objects.order_by("name").first()
    assert node is not None
    return node


def listed_ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.content
    body = response.json()
    return {row["id"] for row in (body["results"] if isinstance(body, dict) else body)}


def state_of(job: Job) -> str:
    return Job.objects.values_list("state", flat=True).get(pk=job.pk)


def job_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": "api-job",
        "command": ["python", "train.py"],
        "gpu_model": "a100",
        "gpus_per_node": 1,
        "walltime": 600,
        **fields,
    }


# Without credentials


ANONYMOUS_CALLS = [
    ("get", "/me/"),
    ("get", "/"),
    ("get", "/jobs/"),
    ("get", "/jobs.json"),
    ("post", "/jobs/"),
    ("get", "/jobs/{job}/"),
    ("post", "/jobs/{job}/cancel/"),
    ("get", "/jobs/{job}/events/"),
    ("get", "/jobs/{job}/logs/"),
    ("get", "/templates/"),
    ("get", "/templates/custom/"),
    ("get", "/teams/"),
    ("get", "/teams/vision/"),
    ("get", "/pools/"),
    ("get", "/pools/{pool}/"),
    ("get", "/nodes/"),
    ("get", "/nodes/{node}/"),
    ("get", "/nodes/{node}/events/"),
    ("post", "/nodes/{node}/cordon/"),
    ("post", "/nodes/{node}/drain/"),
    ("post", "/nodes/{node}/resume/"),
    ("get", "/tokens/"),
    ("post", "/tokens/"),
    ("delete", "/tokens/{token}/"),
]


@pytest.fixture
def targets(alice: User, alice_job: Job, node: Node) -> dict[str, int | str]:
    token, _ = ApiToken.issue(alice, "alice-laptop")
    return {"job": alice_job.pk, "node": node.name, "pool": node.pool.name, "token": token.pk}


@pytest.mark.parametrize(("method", "path"), ANONYMOUS_CALLS)
def test_a_caller_without_credentials_gets_401_everywhere(
    api: Callable[[User | None], APIClient], targets: dict[str, int | str], method: str, path: str
) -> None:
    response = getattr(api(None), method)(V1 + path.format(**targets), {"reason": "x", "name": "x"}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert b"vision-alice-resnet" not in response.content


def test_a_caller_without_credentials_changes_nothing(
    api: Callable[[User | None], APIClient], alice_job: Job, node: Node, targets: dict[str, int | str]
) -> None:
    client = api(None)
    client.post(f"{V1}/jobs/{alice_job.pk}/cancel/", format="json")
    client.post(f"{V1}/nodes/{node.name}/cordon/", {"reason": "x"}, format="json")
    client.delete(f"{V1}/tokens/{targets['token']}/")
    client.post(f"{V1}/jobs/", job_body(team="vision"), format="json")
    assert state_of(alice_job) == JobState.PENDING
    assert Node.objects.get(pk=node.pk).state == NodeState.READY
    assert ApiToken.objects.get(pk=targets["token"]).revoked_at is None
    assert Job.objects.count() == 1


def test_a_revoked_token_gets_401(api: Callable[[User | None], APIClient], alice: User) -> None:
    client = api(alice)
    assert client.get(f"{V1}/me/").status_code == 200
    ApiToken.objects.filter(user=alice).update(revoked_at=timezone.now())
    assert client.get(f"{V1}/me/").status_code == 401
    assert client.get(f"{V1}/jobs/").status_code == 401


def test_a_made_up_token_gets_401(api: Callable[[User | None], APIClient]) -> None:
    client = api(None)
    client.credentials(HTTP_AUTHORIZATION="Token gp_not-a-real-key")
    assert client.get(f"{V1}/me/").status_code == 401


def test_the_token_of_a_deactivated_user_gets_401(api: Callable[[User | None], APIClient], alice: User) -> None:
    client = api(alice)
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert client.get(f"{V1}/me/").status_code == 401


# Who am I


def test_me_describes_the_caller_and_only_the_caller(api: Callable[[User | None], APIClient], alice: User, carol: User) -> None:
    body = api(alice).get(f"{V1}/me/").json()
    assert body == {
        "username": "alice",
        "is_operator": False,
        "is_finance": False,
        "teams": [{"slug": "vision", "role": "researcher"}],
    }
    assert api(carol).get(f"{V1}/me/").json()["teams"] == [{"slug": "render", "role": "researcher"}]


# Jobs: the outsider


def test_an_outsider_does_not_see_another_teams_jobs_in_the_list(
    api: Callable[[User | None], APIClient], carol: User, alice_job: Job, bob_job: Job, carol_job: Job
) -> None:
    assert listed_ids(api(carol).get(f"{V1}/jobs/")) == {carol_job.pk}


def test_an_outsider_cannot_list_another_team_by_filtering_for_it(
    api: Callable[[User | None], APIClient], carol: User, alice_job: Job
) -> None:
    assert listed_ids(api(carol).get(f"{V1}/jobs/", {"team": "vision"})) == set()
    assert listed_ids(api(carol).get(f"{V1}/jobs/", {"q": "vision"})) == set()


@pytest.mark.parametrize("suffix", ["", "events/", "logs/"])
def test_an_outsider_gets_404_for_another_teams_job(
    api: Callable[[User | None], APIClient], carol: User, alice_job: Job, suffix: str
) -> None:
    response = api(carol).get(f"{V1}/jobs/{alice_job.pk}/{suffix}")
    assert response.status_code == 404
    assert b"vision-alice-resnet" not in response.content


def test_an_outsider_gets_404_when_cancelling_another_teams_job_and_it_keeps_running(
    api: Callable[[User | None], APIClient], carol: User, alice_job: Job
) -> None:
    response = api(carol).post(f"{V1}/jobs/{alice_job.pk}/cancel/", {"reason": "mine now"}, format="json")
    assert response.status_code == 404
    assert state_of(alice_job) == JobState.PENDING


def test_submitting_to_a_team_you_are_not_in_is_a_400_naming_the_team_field(
    api: Callable[[User | None], APIClient], carol: User, grid: SimulatorBackend
) -> None:
    response = api(carol).post(f"{V1}/jobs/", job_body(team="vision", name="into-vision"), format="json")
    assert response.status_code == 400
    assert "team" in response.json()
    assert not Job.objects.filter(name="into-vision").exists()


def test_a_user_in_no_team_cannot_submit_at_all(
    api: Callable[[User | None], APIClient], fiona: User, grid: SimulatorBackend
) -> None:
    response = api(fiona).post(f"{V1}/jobs/", job_body(name="nowhere"), format="json")
    assert response.status_code == 400
    assert "team" in response.json()
    assert not Job.objects.filter(name="nowhere").exists()


def test_a_user_in_no_team_sees_no_jobs(
    api: Callable[[User | None], APIClient], fiona: User, alice_job: Job, carol_job: Job
) -> None:
    assert listed_ids(api(fiona).get(f"{V1}/jobs/")) == set()
    assert api(fiona).get(f"{V1}/jobs/{alice_job.pk}/").status_code == 404


# Jobs: the team


def test_a_member_sees_their_whole_teams_jobs_and_no_others(
    api: Callable[[User | None], APIClient], alice: User, alice_job: Job, bob_job: Job, carol_job: Job
) -> None:
    assert listed_ids(api(alice).get(f"{V1}/jobs/")) == {alice_job.pk, bob_job.pk}


@pytest.mark.parametrize("suffix", ["", "events/", "logs/"])
def test_a_teammate_can_read_a_job_of_their_team(
    api: Callable[[User | None], APIClient], bob: User, alice_job: Job, suffix: str
) -> None:
    response = api(bob).get(f"{V1}/jobs/{alice_job.pk}/{suffix}")
    assert response.status_code == 200


def test_the_job_detail_and_events_are_those_of_the_job_asked_for(
    api: Callable[[User | None], APIClient], bob: User, alice_job: Job
) -> None:
    assert api(bob).get(f"{V1}/jobs/{alice_job.pk}/").json()["name"] == "vision-alice-resnet"
    events = api(bob).get(f"{V1}/jobs/{alice_job.pk}/events/").json()
    assert [e["actor"] for e in events] == ["alice"]


def test_a_member_can_submit_to_their_team(api: Callable[[User | None], APIClient], alice: User, grid: SimulatorBackend) -> None:
    response = api(alice).post(f"{V1}/jobs/", job_body(team="vision", name="own-team"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["team"] == "vision" and response.json()["owner"] == "alice"


def test_the_owner_can_cancel_their_job(api: Callable[[User | None], APIClient], alice: User, alice_job: Job) -> None:
    response = api(alice).post(f"{V1}/jobs/{alice_job.pk}/cancel/", format="json")
    assert response.status_code == 200
    assert state_of(alice_job) == JobState.CANCELLED


def test_a_team_lead_can_cancel_a_researchers_job(api: Callable[[User | None], APIClient], bob: User, alice_job: Job) -> None:
    response = api(bob).post(f"{V1}/jobs/{alice_job.pk}/cancel/", {"reason": "over budget"}, format="json")
    assert response.status_code == 200
    assert state_of(alice_job) == JobState.CANCELLED


def test_a_researcher_cannot_cancel_their_leads_job(api: Callable[[User | None], APIClient], alice: User, bob_job: Job) -> None:
    response = api(alice).post(f"{V1}/jobs/{bob_job.pk}/cancel/", format="json")
    assert response.status_code == 403
    assert state_of(bob_job) == JobState.PENDING


# Jobs: the operator


def test_the_operator_sees_every_teams_jobs(
    api: Callable[[User | None], APIClient], olivia: User, alice_job: Job, carol_job: Job
) -> None:
    assert listed_ids(api(olivia).get(f"{V1}/jobs/")) == {alice_job.pk, carol_job.pk}
    assert api(olivia).get(f"{V1}/jobs/{carol_job.pk}/events/").status_code == 200


def test_the_operator_can_cancel_any_job(api: Callable[[User | None], APIClient], olivia: User, carol_job: Job) -> None:
    response = api(olivia).post(f"{V1}/jobs/{carol_job.pk}/cancel/", {"reason": "maintenance"}, format="json")
    assert response.status_code == 200
    assert state_of(carol_job) == JobState.CANCELLED


def test_the_operator_cannot_submit_into_a_team_they_are_not_in(
    api: Callable[[User | None], APIClient], olivia: User, grid: SimulatorBackend
) -> None:
    response = api(olivia).post(f"{V1}/jobs/", job_body(team="vision", name="op-job"), format="json")
    assert response.status_code == 400
    assert "team" in response.json()


# Teams


def test_a_member_sees_only_their_own_teams(api: Callable[[User | None], APIClient], alice: User, carol: User) -> None:
    assert [t["slug"] for t in api(alice).get(f"{V1}/teams/").json()] == ["vision"]
    assert api(alice).get(f"{V1}/teams/vision/").status_code == 200


def test_an_outsider_gets_404_for_another_team_and_learns_none_of_its_members(
    api: Callable[[User | None], APIClient], carol: User, alice: User
) -> None:
    response = api(carol).get(f"{V1}/teams/vision/")
    assert response.status_code == 404
    assert b"alice" not in response.content
    assert b"alice" not in api(carol).get(f"{V1}/teams/").content


def test_the_operator_sees_every_team(api: Callable[[User | None], APIClient], olivia: User, alice: User, carol: User) -> None:
    assert sorted(t["slug"] for t in api(olivia).get(f"{V1}/teams/").json()) == ["render", "vision"]


# Shared read-only catalogues: templates, pools, nodes


@pytest.mark.parametrize(
    "path", ["/templates/", "/templates/custom/", "/pools/", "/nodes/", "/nodes/{node}/", "/nodes/{node}/events/"]
)
def test_any_signed_in_user_may_read_the_shared_catalogues(
    api: Callable[[User | None], APIClient], carol: User, node: Node, path: str
) -> None:
    assert api(carol).get(V1 + path.format(node=node.name)).status_code == 200


def test_templates_are_read_only_even_for_the_operator(api: Callable[[User | None], APIClient], olivia: User) -> None:
    assert api(olivia).post(f"{V1}/templates/", {"slug": "x"}, format="json").status_code == 405
    assert api(olivia).delete(f"{V1}/templates/custom/").status_code == 405


# Node actions: operators only, with a reason


@pytest.mark.parametrize("persona", ["alice", "bob", "carol", "fiona"])
@pytest.mark.parametrize("action", ["cordon", "drain", "resume"])
def test_a_non_operator_gets_403_for_node_actions_and_the_node_is_unchanged(
    request: pytest.FixtureRequest, api: Callable[[User | None], APIClient], node: Node, persona: str, action: str
) -> None:
    user = request.getfixturevalue(persona)
    response = api(user).post(f"{V1}/nodes/{node.name}/{action}/", {"reason": "let me"}, format="json")
    assert response.status_code == 403
    after = Node.objects.get(pk=node.pk)
    assert (after.state, after.reason) == (NodeState.READY, "")
    assert not after.events.exclude(actor="backend").exists()


@pytest.mark.parametrize(("action", "state"), [("cordon", NodeState.CORDONED), ("drain", NodeState.DRAINING)])
def test_the_operator_can_cordon_and_drain_with_a_reason(
    api: Callable[[User | None], APIClient], olivia: User, node: Node, action: str, state: NodeState
) -> None:
    response = api(olivia).post(f"{V1}/nodes/{node.name}/{action}/", {"reason": "fan noise"}, format="json")
    assert response.status_code == 200, response.content
    assert Node.objects.get(pk=node.pk).state == state
    assert node.events.filter(actor="olivia", reason="fan noise").exists()


@pytest.mark.parametrize("action", ["cordon", "drain"])
@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}])
def test_cordon_and_drain_need_a_reason(
    api: Callable[[User | None], APIClient], olivia: User, node: Node, action: str, body: dict[str, Any]
) -> None:
    response = api(olivia).post(f"{V1}/nodes/{node.name}/{action}/", body, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()
    assert Node.objects.get(pk=node.pk).state == NodeState.READY


def test_the_operator_can_resume_a_cordoned_node(api: Callable[[User | None], APIClient], olivia: User, node: Node) -> None:
    client = api(olivia)
    client.post(f"{V1}/nodes/{node.name}/cordon/", {"reason": "fan noise"}, format="json")
    response = client.post(f"{V1}/nodes/{node.name}/resume/", {}, format="json")
    assert response.status_code == 200, response.content
    assert Node.objects.get(pk=node.pk).state == NodeState.READY


# API tokens


def test_the_token_list_holds_only_your_own_tokens(api: Callable[[User | None], APIClient], alice: User, carol: User) -> None:
    ApiToken.issue(carol, "carol-workstation")
    names = [t["name"] for t in api(alice).get(f"{V1}/tokens/").json()]
    assert names == ["tests"]


def test_deleting_another_users_token_is_a_404_and_the_token_still_works(
    api: Callable[[User | None], APIClient], alice: User, carol: User
) -> None:
    token, key = ApiToken.issue(alice, "alice-laptop")
    response = api(carol).delete(f"{V1}/tokens/{token.pk}/")
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    client = api(None)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(f"{V1}/me/").json()["username"] == "alice"


def test_you_can_revoke_your_own_token_and_it_stops_working(api: Callable[[User | None], APIClient], alice: User) -> None:
    token, key = ApiToken.issue(alice, "alice-laptop")
    assert api(alice).delete(f"{V1}/tokens/{token.pk}/").status_code == 204
    client = api(None)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(f"{V1}/me/").status_code == 401


def test_a_token_is_issued_to_the_caller_and_never_to_someone_else(alice: User, carol: User) -> None:
    session = APIClient()
    session.force_login(alice)
    response = session.post(f"{V1}/tokens/", {"name": "ci", "user": carol.pk}, format="json")
    assert response.status_code == 201
    assert ApiToken.objects.get(pk=response.json()["id"]).user == alice
    assert not ApiToken.objects.filter(user=carol).exists()


def test_the_operator_cannot_list_or_revoke_other_peoples_tokens(
    api: Callable[[User | None], APIClient], olivia: User, alice: User
) -> None:
    token, _ = ApiToken.issue(alice, "alice-laptop")
    assert "alice-laptop" not in [t["name"] for t in api(olivia).get(f"{V1}/tokens/").json()]
    assert api(olivia).delete(f"{V1}/tokens/{token.pk}/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_a_token_cannot_create_tokens_so_revoking_a_leaked_one_ends_its_access(
    api: Callable[[User | None], APIClient], alice: User
) -> None:
    leaked = api(alice)
    response = leaked.post(f"{V1}/tokens/", {"name": "persist"}, format="json")
    assert response.status_code == 403 and "sign in" in response.json()["detail"]
    assert ApiToken.objects.filter(user=alice).count() == 1  # only the one the fixture issued
    ApiToken.objects.filter(user=alice).update(revoked_at=timezone.now())
    assert leaked.get(f"{V1}/me/").status_code == 401


def test_a_password_change_offers_to_revoke_every_token_and_does_it(alice: User) -> None:
    from django.test import Client

    ApiToken.issue(alice, "laptop")
    ApiToken.issue(alice, "ci")
    browser = Client()
    browser.force_login(alice)
    changed = browser.post(
        "/accounts/password/change/",
        {"oldpassword": "pw-for-tests", "password1": "a-new-long-passphrase-7", "password2": "a-new-long-passphrase-7"},
        follow=True,
    )
    assert changed.status_code == 200
    page = browser.get("/tokens/")
    assert b"offer-revoke-all" in page.content and b"still work" in page.content
    done = browser.post("/tokens/", {"action": "revoke_all"}, follow=True)
    assert done.status_code == 200 and b"2 token(s) revoked" in done.content
    assert not ApiToken.objects.filter(user=alice, revoked_at__isnull=True).exists()
    assert b"offer-revoke-all" not in browser.get("/tokens/").content
