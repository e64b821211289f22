"""The two stores the portal supports: a directory, and a real S3-compatible server (moto's, on a loopback port)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from pytest_django import Settings as SettingsWrapper

from artifacts import services
from artifacts.stores import s3_client
from cluster.simulator.backend import CHECKPOINT_FILE, SimulatorBackend
from cluster.simulator.model import parse_pools
from tests.conftest import TEST_POOLS

KEY_ID, KEY = "artifact-tests", "artifact-tests-secret"
_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def fresh_store_cache() -> Iterator[None]:
    services._open.cache_clear()
    yield
    services._open.cache_clear()


@pytest.fixture
def file_store(settings: SettingsWrapper, tmp_path: Path) -> Path:
    """ARTIFACT_STORE is a directory (as a shared filesystem would be); returns its root."""
    root = tmp_path / "artifacts"
    root.mkdir()
    settings.ARTIFACT_STORE = f"file://{root}"
    return root


@pytest.fixture
def s3_store(settings: SettingsWrapper, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """ARTIFACT_STORE is a fresh bucket on moto's S3 server; returns a client for looking inside it."""
    monkeypatch.setenv("ARTIFACT_S3_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ARTIFACT_S3_SECRET_ACCESS_KEY", KEY)
    bucket = f"grid-artifacts-{next(_buckets)}"
    client = s3_client(moto_url, "us-east-1", KEY_ID, KEY)
    client.create_bucket(Bucket=bucket)
    settings.ARTIFACT_STORE = f"s3://{bucket}/site"
    settings.ARTIFACT_S3_ENDPOINT_URL = moto_url
    settings.ARTIFACT_S3_REGION = "us-east-1"
    client.bucket = bucket
    return client


@pytest.fixture(params=["file", "s3"])
def any_store(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once on each store."""
    request.getfixturevalue("file_store" if request.param == "file" else "s3_store")
    return str(request.param)


@pytest.fixture
def put() -> Callable[[Any, str, bytes], None]:
    """Write a file into a job's location as the job would (through the configured store)."""
    import io

    from artifacts.layout import JobLayout

    def write(job: Any, path: str, data: bytes) -> None:
        services.store().put(JobLayout(job.team.slug, job.pk).prefix + path, io.BytesIO(data))

    return write


class Clock:
    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(clock: Clock, db: None) -> SimulatorBackend:
    return SimulatorBackend(pools=parse_pools(TEST_POOLS), speed=1.0, failure_rate=0.0, clock=clock)


def saved(job: Any, root: Path) -> float:
    """The work saved in the job's simulated checkpoint file on a path store."""
    body = json.loads((root / f"vision/{job.pk}/checkpoints" / CHECKPOINT_FILE).read_text())
    assert body["portal_job_id"] == job.pk
    return float(body["progress_s"])
