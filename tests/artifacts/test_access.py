"""Who gets a job's files: the job's own rule on every route, on both stores; bad input names the field and the limit.

Personas: alice (vision, owns the job), bob (vision's lead), dave (vision, not the owner), carol (render: the outsider),
olivia (operator).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from billing.services import add_storage_rate
from jobs.models import Job
from portal.models import Membership, TeamRole, User


@pytest.fixture
def job(alice: User, submit: Callable[..., Job], put: Callable[..., None], any_store: str) -> Job:
    made = submit(alice, name="resnet")
    put(made, "output/model.pt", b"weights")
    put(made, "checkpoints/step-5.ckpt", b"ckpt")
    return made


@pytest.fixture
def dave(alice: User) -> User:
    user = User.objects.create_user(username="dave", password="x")
    Membership.objects.create(user=user, team=alice.memberships.get().team, role=TeamRole.RESEARCHER)
    return user


def routes(job: Job) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("get", f"/artifacts/jobs/{job.pk}/", None),
        ("get", f"/artifacts/jobs/{job.pk}/files/output/model.pt", None),
        ("get", "/artifacts/teams/vision/", None),
        ("post", "/artifacts/teams/vision/", {"retention_days": "3"}),
        ("get", f"/api/v1/artifacts/jobs/{job.pk}/", None),
        ("post", f"/api/v1/artifacts/jobs/{job.pk}/uploads/", {"path": "output/x.bin", "size": 10}),
        ("get", "/api/v1/artifacts/teams/vision/", None),
        ("put", "/api/v1/artifacts/teams/vision/", {"retention_days": 3}),
    ]


def test_the_outsider_is_refused_every_artifact_route_and_learns_nothing(
    job: Job, carol: User, web: Callable[[User | None], Client], api: Callable[[User | None], APIClient]
) -> None:
    for method, url, body in routes(job):
        client: Any = api(carol) if url.startswith("/api/") else web(carol)
        answer = getattr(client, method)(url, body or {}, **({"format": "json"} if url.startswith("/api/") else {}))
        assert answer.status_code == 404, (method, url, answer.status_code)
        assert b"weights" not in answer.content and b"model.pt" not in answer.content


def test_the_job_page_lists_its_files_with_sizes_and_download_links(
    job: Job, alice: User, web: Callable[[User | None], Client]
) -> None:
    page = web(alice).get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="artifacts"' in page and "output/model.pt" in page and "checkpoints/step-5.ckpt" in page
    assert f'href="/artifacts/jobs/{job.pk}/files/output/model.pt"' in page and "7 B" in page


def test_a_teammate_downloads_a_file(job: Job, any_store: str, bob: User, web: Callable[[User | None], Client]) -> None:
    answer = web(bob).get(f"/artifacts/jobs/{job.pk}/files/output/model.pt")
    if any_store == "s3":  # a short pre-signed URL, handed out only after the check
        assert (
            answer.status_code == 302 and "X-Amz-Signature=" in answer["Location"] and "X-Amz-Expires=300" in answer["Location"]
        )
        import urllib.request

        with urllib.request.urlopen(answer["Location"], timeout=10) as fetched:
            assert fetched.read() == b"weights"
    else:
        assert answer.status_code == 200 and b"".join(answer.streaming_content) == b"weights"  # type: ignore[attr-defined]
        assert 'filename="model.pt"' in answer["Content-Disposition"]
    assert "no-store" in answer["Cache-Control"]


def test_the_api_lists_a_jobs_files(job: Job, alice: User, api: Callable[[User | None], APIClient]) -> None:
    body = api(alice).get(f"/api/v1/artifacts/jobs/{job.pk}/").json()
    assert [(f["path"], f["size"]) for f in body["files"]] == [("checkpoints/step-5.ckpt", 4), ("output/model.pt", 7)]
    assert body["total_bytes"] == 11


def test_upload_urls_for_the_owner_and_the_lead_not_for_other_members(
    s3_store: Any, alice: User, bob: User, dave: User, submit: Callable[..., Job], api: Callable[[User | None], APIClient]
) -> None:
    job = submit(alice)
    for who in (alice, bob):
        answer = api(who).post(f"/api/v1/artifacts/jobs/{job.pk}/uploads/", {"path": "output/x.bin", "size": 3}, format="json")
        assert answer.status_code == 201 and answer.json()["method"] == "PUT" and "X-Amz-Signature=" in answer.json()["url"]
    refused = api(dave).post(f"/api/v1/artifacts/jobs/{job.pk}/uploads/", {"path": "output/x.bin", "size": 3}, format="json")
    assert refused.status_code == 403 and "owner" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"path": "output/../../render/1/output/x", "size": 1}, "path", "'..'"),
        ({"path": "/etc/passwd", "size": 1}, "path", "relative"),
        ({"path": "output/x", "size": 6 * 2**30}, "size", f"at most {5 * 2**30} bytes"),
        ({"path": "output/x"}, "size", "required"),
    ],
)
def test_bad_upload_requests_name_the_field_and_the_limit(
    s3_store: Any,
    alice: User,
    submit: Callable[..., Job],
    api: Callable[[User | None], APIClient],
    body: dict[str, Any],
    field: str,
    says: str,
) -> None:
    job = submit(alice)
    answer = api(alice).post(f"/api/v1/artifacts/jobs/{job.pk}/uploads/", body, format="json")
    assert answer.status_code == 400 and says in answer.json()[field][0]


def test_an_unknown_job_and_a_bad_download_path_say_so(
    job: Job, alice: User, web: Callable[[User | None], Client], api: Callable[[User | None], APIClient]
) -> None:
    assert api(alice).get("/api/v1/artifacts/jobs/999999/").json()["detail"] == "no job #999999 that you can see"
    assert web(alice).get("/artifacts/jobs/999999/files/output/model.pt").status_code == 404
    escape = web(alice).get(f"/artifacts/jobs/{job.pk}/files/output/%2E%2E/%2E%2E/x")
    assert escape.status_code == 400 and b"'..'" in escape.content
    assert web(alice).get(f"/artifacts/jobs/{job.pk}/files/output/missing.bin").status_code == 404


def test_on_a_path_store_the_api_says_to_write_to_the_mounted_directory(
    file_store: Any, alice: User, submit: Callable[..., Job], api: Callable[[User | None], APIClient]
) -> None:
    job = submit(alice)
    answer = api(alice).post(f"/api/v1/artifacts/jobs/{job.pk}/uploads/", {"path": "output/x", "size": 1}, format="json")
    assert answer.status_code == 400 and "GRID_OUTPUT_DIR" in answer.json()["path"][0]


def test_retention_is_set_by_the_lead_within_bounds(
    alice: User,
    bob: User,
    submit: Callable[..., Job],
    api: Callable[[User | None], APIClient],
    web: Callable[[User | None], Client],
) -> None:
    submit(alice)
    url = "/api/v1/artifacts/teams/vision/"
    assert api(alice).put(url, {"retention_days": 30}, format="json").status_code == 403
    for bad in (0, 3651, "soon"):
        answer = api(bob).put(url, {"retention_days": bad}, format="json")
        assert answer.status_code == 400 and "3650" in answer.json()["retention_days"][0]
    assert api(bob).put(url, {"retention_days": 30}, format="json").json()["retention_days"] == 30
    assert api(alice).get(url).json()["retention_days"] == 30
    page = web(alice).get("/artifacts/teams/vision/").content.decode()
    assert "30 days after a job ends" in page and 'name="retention_days"' not in page  # alice may not change it
    assert 'name="retention_days"' in web(bob).get("/artifacts/teams/vision/").content.decode()


def test_the_team_page_shows_artifact_storage_beside_the_quotas(
    file_store: Any,
    settings: Any,
    alice: User,
    submit: Callable[..., Job],
    put: Callable[..., None],
    web: Callable[[User | None], Client],
) -> None:
    from artifacts import services

    add_storage_rate(per_gb_month=Decimal("0.05"), valid_from=date(2020, 1, 1))
    put(submit(alice), "output/big.bin", b"x" * 2500)
    services.measure_usage()
    page = web(alice).get("/teams/vision/").content.decode()
    assert 'id="artifact-usage"' in page and "2.5 KB in 1 file" in page and "0.0500 per GB-month" in page
    assert page.index("Quotas, use and lending") < page.index("Artifact storage")


def test_the_job_page_says_when_retention_deleted_the_files(
    job: Job, alice: User, olivia: User, web: Callable[[User | None], Client]
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from artifacts import services
    from jobs.states import JobState

    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED, finished_at=timezone.now() - timedelta(days=3))
    services.set_retention(olivia, job.team, 1)
    assert services.purge_expired() == 1
    page = web(alice).get(f"/jobs/{job.pk}/").content.decode()
    assert "deleted on" in page and "retention policy" in page and "output/model.pt" not in page
