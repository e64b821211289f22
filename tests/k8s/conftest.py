"""A fake Kubernetes API server per test, and the real client and backend pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from cluster.backends.kubernetes.api import KubeApi
from cluster.backends.kubernetes.backend import KubernetesBackend, KubeSettings
from tests.k8s.fake_apiserver import FakeApiServer


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    server.add_namespace("team-vision")
    server.add_namespace("capi")
    yield server
    server.stop()


def connect(url: str, timeout_s: float = 3.0) -> KubeApi:
    configuration = client.Configuration()
    configuration.host = url
    return KubeApi(configuration, timeout_s)


@pytest.fixture
def k8s(fake: FakeApiServer) -> Iterator[KubernetesBackend]:
    options = KubeSettings(burst_machinedeployments={"burst-a10g": ("capi", "burst-a10g")}, conflict_retries=3)
    api = connect(fake.url)
    yield KubernetesBackend(api, options)
    api.close()
