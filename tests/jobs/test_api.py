"""The jobs API as a CI script uses it: submit, arrays, errors, list, detail, cancel, logs, schema."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from cluster.simulator.backend import SimulatorBackend
from jobs import services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User


@pytest.fixture
def client(api: Callable[[User | None], APIClient], alice: User, grid: SimulatorBackend) -> APIClient:
    return api(alice)


def test_a_script_submits_a_job_and_reads_why_it_waits_where_it_stands_and_when_it_starts(client: APIClient) -> None:
    job = {"command": ["python", "train.py"], "gpu_model": "a100", "gpus_per_node": 8, "walltime": "01:00:00"}
    first = client.post("/api/v1/jobs/", {**job, "name": "first"}, format="json")
    assert first.status_code == 201, first.json()
    body = first.json()
    assert body["state"] == "pending" and body["team"] == "vision" and body["gpus"] == 8
    second = client.post("/api/v1/jobs/", {**job, "name": "second"}, format="json").json()
    services.run_admission_cycle()  # vision's limit is 12 GPUs: the second 8-GPU job must wait
    detail = client.get(f"/api/v1/jobs/{second['id']}/").json()
    assert detail["state"] == "pending" and detail["reason"] == "quota"
    assert "limit" in detail["reason_detail"]
    assert detail["team_position"] == 1 and detail["pool_position"] == 1
    assert detail["estimated_start"] is not None


def test_an_array_is_one_request_and_many_jobs(client: APIClient) -> None:
    response = client.post(
        "/api/v1/jobs/",
        {"template": "blender-render", "name": "shot", "array": "0-9", "params": {"frame_start": "1"}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["count"] == 10 and len(body["ids"]) == 10
    names = sorted(Job.objects.filter(array_id=body["array_id"]).values_list("name", flat=True))
    assert names[0] == "shot[0]" and len(names) == 10
    assert Job.objects.get(name="shot[3]").env["ARRAY_INDEX"] == "3"
    listed = client.get(f"/api/v1/jobs/?array_id={body['array_id']}").json()["results"]
    assert len(listed) == 10


def test_bad_input_names_every_field_and_creates_nothing(client: APIClient) -> None:
    response = client.post(
        "/api/v1/jobs/",
        {"name": "x", "command": ["x"], "gpu_model": "a100", "gpus_per_node": 64, "walltime": "30-00:00:00", "array": "0-5000"},
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()
    assert "more than the limit of 8" in errors["gpus_per_node"][0]
    assert "over the limit" in errors["walltime"][0]
    assert "more than the limit of 1000" in errors["array"][0]
    assert Job.objects.count() == 0


def test_a_non_object_body_is_a_clear_error(client: APIClient) -> None:
    response = client.post("/api/v1/jobs/", [1, 2], format="json")
    assert response.status_code == 400
    assert Job.objects.count() == 0


def test_an_unknown_template_is_named(client: APIClient) -> None:
    response = client.post("/api/v1/jobs/", {"template": "nope", "name": "x"}, format="json")
    assert response.status_code == 400 and "nope" in response.json()["template"][0]


def test_the_list_filters_by_state_and_name_and_pages_by_cursor(
    client: APIClient, alice: User, submit: Callable[..., Job]
) -> None:
    for n in range(7):
        submit(alice, name=f"run-{n}")
    submit(alice, name="other")
    assert len(client.get("/api/v1/jobs/?q=run-").json()["results"]) == 7
    page = client.get("/api/v1/jobs/?page_size=3").json()
    assert len(page["results"]) == 3 and page["next"]
    second = client.get(page["next"]).json()
    assert {j["id"] for j in page["results"]}.isdisjoint({j["id"] for j in second["results"]})
    assert client.get("/api/v1/jobs/?state=bogus").status_code == 400


def test_cancel_logs_and_events_through_the_api(client: APIClient, alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice, name="to-cancel")
    services.run_admission_cycle()
    services.dispatch(job.pk)
    services.sync_jobs()
    logs = client.get(f"/api/v1/jobs/{job.pk}/logs/").json()
    assert logs["lines"][0].startswith(f"[portal] job {job.pk}")
    response = client.post(f"/api/v1/jobs/{job.pk}/cancel/", {"reason": "wrong data"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == JobState.CANCELLED
    events = client.get(f"/api/v1/jobs/{job.pk}/events/").json()
    assert events[-1]["to_state"] == "cancelled" and events[-1]["reason"] == "wrong data"
    again = client.post(f"/api/v1/jobs/{job.pk}/cancel/", {}, format="json")
    assert again.status_code == 400 and "already ended" in again.json()["state"][0]


def test_the_openapi_schema_describes_the_job_endpoints(client: APIClient) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert "/api/v1/jobs/" in schema["paths"] and "post" in schema["paths"]["/api/v1/jobs/"]
    assert "/api/v1/jobs/{id}/cancel/" in schema["paths"]


def test_templates_are_listed_with_their_limits(client: APIClient) -> None:
    templates = {t["slug"]: t for t in client.get("/api/v1/templates/").json()}
    assert {"pytorch-ddp", "blender-render", "gromacs-md", "custom"} <= set(templates)
    assert templates["pytorch-ddp"]["max_nodes"] == 4
