"""A fake Kubernetes API server per test, and the real client and backend pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from pytest_django import Settings

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


@pytest.fixture
def portal_on_fake(fake: FakeApiServer, settings: Settings, tmp_path: Path) -> FakeApiServer:
    """The portal itself (get_backend(), as services, API and console call it) pointed at the fake API server."""
    settings.K8S_KUBECONFIG = str(write_kubeconfig(fake.url, tmp_path))
    settings.CLUSTER_BACKEND = "kubernetes"
    return fake


def write_kubeconfig(server: str, folder: Path) -> Path:
    """A kubeconfig naming this API server, written in folder."""
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "portal", "user": {"token": "not-checked-by-the-fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "portal"}}],
        "current-context": "fake",
    }
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return path
