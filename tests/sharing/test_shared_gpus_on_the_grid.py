"""Shared GPUs through the whole portal on the simulated grid: a node of MIG slices, jobs that ask for
part of a GPU packed onto it, the team's quota of slices held, the pools API naming what they are, the
usage metered per slice, and an outsider refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pytest_django import Settings
from rest_framework.test import APIClient

from billing.models import UsageRecord
from billing.services.usage import meter_job
from cluster import services as cluster_services
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import parse_pools
from jobs.models import Job
from jobs.states import JobState
from portal.models import Team, User
from quotas.models import TeamQuota
from tests.conftest import TEST_POOLS
from tests.jobs.test_lifecycle import run_cycle

POOLS = f"{TEST_POOLS},onprem-mig:onprem:a100-1g.10gb:1x28"


@pytest.fixture
def shared_grid(db: None, settings: Settings, vision: Team) -> SimulatorBackend:
    settings.SIM_POOLS = POOLS
    backend = SimulatorBackend(pools=parse_pools(POOLS), speed=1.0, failure_rate=0.0)
    cluster_services.sync_nodes(backend)
    TeamQuota.objects.create(team=vision, gpu_model="a100-1g.10gb", guarantee=7, limit=10)
    return backend


def submit(api: Callable[[User | None], APIClient], user: User, **fields: object) -> dict[str, Any]:
    body = {"name": "eval", "command": ["python", "eval.py"], "gpu_model": "a100", "walltime": 600, **fields}
    answer = api(user).post("/api/v1/jobs/", body, format="json")
    assert answer.status_code == 201, answer.content
    job: dict[str, Any] = answer.json()
    return job


def test_jobs_asking_for_part_of_a_gpu_share_a_node_within_the_teams_quota_of_slices(
    shared_grid: SimulatorBackend, alice: User, api: Callable[[User | None], APIClient]
) -> None:
    ids = [submit(api, alice, gpu_fraction=0.1)["id"] for _ in range(4)] + [
        submit(api, alice, gpu_fraction="1/7", gpus_per_node=1)["id"]
    ]
    assert set(Job.objects.filter(pk__in=ids).values_list("gpu_model", flat=True)) == {"a100-1g.10gb"}
    big = submit(api, alice, gpu_model="a100-1g.10gb", gpus_per_node=6)["id"]  # 5 + 6 slices > the limit of 10
    run_cycle()
    running = Job.objects.filter(pk__in=ids, state=JobState.RUNNING)
    assert running.count() == 5
    assert {node for job in running for node in job.placement} == {"onprem-mig-01"}  # five jobs share the one node of slices
    waiting = Job.objects.get(pk=big)
    assert waiting.state == JobState.PENDING and waiting.reason == "quota", waiting.reason_detail

    pools = {p["name"]: p for p in api(alice).get("/api/v1/pools/").json()}
    assert pools["onprem-mig"] | {"name": ""} == {
        "name": "", "kind": "onprem", "gpu_model": "a100-1g.10gb", "shares": "a100", "gpu_fraction": "1/7", "sharing": "mig",
    }  # fmt: skip
    assert pools["onprem-a100"]["shares"] == "" and pools["onprem-a100"]["gpu_fraction"] == "1"

    meter_job(ids[0])
    [record] = UsageRecord.objects.filter(job_id=ids[0])
    assert (record.gpu_model, record.gpus) == ("a100-1g.10gb", 1)


def test_a_fraction_the_grid_cannot_serve_is_refused_and_nothing_is_submitted(
    shared_grid: SimulatorBackend, alice: User, api: Callable[[User | None], APIClient]
) -> None:
    answer = api(alice).post(
        "/api/v1/jobs/", {"name": "x", "command": ["true"], "gpu_model": "a100", "gpu_fraction": 0.5}, format="json"
    )
    assert answer.status_code == 400
    assert "no shared a100 GPU of at least 1/2; it has a100-1g.10gb (1/7)" in str(answer.json()["gpu_fraction"])
    assert not Job.objects.exists()


def test_an_outsider_sees_no_shared_gpu_job_of_another_team(
    shared_grid: SimulatorBackend, alice: User, carol: User, api: Callable[[User | None], APIClient]
) -> None:
    job = submit(api, alice, gpu_fraction=0.1)
    assert api(carol).get(f"/api/v1/jobs/{job['id']}/").status_code == 404
    assert job["id"] not in [j["id"] for j in api(carol).get("/api/v1/jobs/").json()["results"]]
