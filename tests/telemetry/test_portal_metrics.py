"""The portal's own /metrics: Prometheus text format, protected by token, operator session or network."""

from __future__ import annotations

from collections.abc import Callable

from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from pytest_django import Settings

from cluster.simulator.backend import SimulatorBackend
from jobs import services
from jobs.models import Job
from portal.models import User


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_it_exports_queue_wait_admissions_and_nodes(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job], web: Callable[[User | None], Client], olivia: User
) -> None:
    job = submit(alice, gpus_per_node=2)
    submit(alice, gpus_per_node=8, name="big")
    services.run_admission_cycle()
    response = web(olivia).get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    found = families(response.content.decode())
    assert {"gridportal_queue_jobs", "gridportal_queue_gpus", "gridportal_admission_wait_seconds", "gridportal_admissions",
            "gridportal_preemptions", "gridportal_nodes_cordoned", "gridportal_gpus_allocated"} <= set(found)  # fmt: skip
    text = response.content.decode()
    assert 'gridportal_admissions_total{team="vision"}' in text
    assert "gridportal_admission_wait_seconds_count" in text and job.pk


def test_the_scrape_token_opens_it_and_a_wrong_one_does_not(grid: SimulatorBackend, settings: Settings, client: Client) -> None:
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics").status_code == 403


def test_an_allowed_network_opens_it(grid: SimulatorBackend, settings: Settings, client: Client) -> None:
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.1").status_code == 403


def test_a_researcher_session_is_not_enough(grid: SimulatorBackend, alice: User, web: Callable[[User | None], Client]) -> None:
    assert web(alice).get("/metrics").status_code == 403
