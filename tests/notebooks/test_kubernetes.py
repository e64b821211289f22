"""A notebook on Kubernetes: its job's pod runs the server, a ClusterIP Service in the team's namespace
selects that pod; both valid against Kubernetes' own schemas (kubernetes-validate, as tests/k8s does).
On the fake API server (tests/k8s): the portal makes the Service once the job runs, owned by the job's
Volcano Job (checked against its CRD schema), and deletes it when the notebook is stopped or culled."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import kubernetes_validate
import pytest
from django.utils import timezone
from pytest_django import Settings

from cluster.backends.kubernetes import manifests
from cluster.backends.kubernetes.manifests import ManifestConfig
from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from jobs.states import JobState
from notebooks import culling, launch, services
from notebooks.models import Notebook
from notebooks.states import EndReason, NotebookState
from portal.models import User
from tests.k8s.fake_apiserver import FakeApiServer
from tests.k8s.test_manifests import K8S_VERSION, pods_of
from tests.notebooks.conftest import notebook_request


def test_the_pod_runs_jupyter_under_the_proxys_path_and_the_service_selects_it(
    grid: SimulatorBackend, alice: User, settings: Settings
) -> None:
    settings.CLUSTER_BACKEND = "kubernetes"
    notebook = services.start(alice, notebook_request(gpus=2))
    request = job_services.job_request(notebook.job)
    assert request.image == settings.NOTEBOOK_IMAGE and request.env[launch.TOKEN_ENV] == services.token_for(notebook)
    job = manifests.volcano_job(request, ManifestConfig())
    [pod] = pods_of(job)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["command"][:2] == ["sh", "-c"]
    # The kubelet turns $$ into $, so the shell, not the kubelet, reads the proxy's path from the environment.
    assert '--ServerApp.base_url="$$GRID_NOTEBOOK_BASE_URL"' in container["command"][2]

    namespace = manifests.namespace_for("vision", ManifestConfig())
    service = launch.kube_service(notebook.pk, notebook.job_id, namespace, manifests.JOB_ID_LABEL)
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    assert service["spec"]["type"] == "ClusterIP"  # reachable inside the cluster only: no port open to the world
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert launch.kube_url(notebook.pk, namespace) == f"http://notebook-{notebook.pk}.{namespace}.svc:8888"


# --- on the cluster: the fake API server (tests/k8s), reached through the portal's own backend ---------

NS = "team-vision"


def running_on_fake(fake: FakeApiServer, alice: User, **fields: Any) -> tuple[Notebook, str]:
    """Start a notebook with the portal on the fake API server and drive its Volcano Job to running."""
    notebook = services.start(alice, notebook_request(gpus=2, **fields))
    job_services.run_admission_cycle()
    assert job_services.dispatch(notebook.job_id)
    name = f"gp-{notebook.job_id}"
    assert fake.get("batch.volcano.sh", "jobs", NS, name) is not None  # the fake checked it against the CRD schema
    fake.set_volcano_phase(NS, name, "Running")
    fake.run_pods("batch.volcano.sh", "jobs", NS, name, ["gpu-a100-1"])
    job_services.sync_jobs()
    notebook.refresh_from_db()
    assert notebook.job.state == JobState.RUNNING
    return notebook, name


def answering(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Service's DNS name resolves inside a cluster only: here the server is taken to answer."""
    monkeypatch.setattr(services, "server_status", lambda url, notebook, timeout=2.0: services.ServerStatus(True))


def test_a_running_notebook_gets_its_service_and_stopping_deletes_it_and_its_job(
    grid: SimulatorBackend, portal_on_fake: FakeApiServer, alice: User, monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    fake = portal_on_fake
    notebook, name = running_on_fake(fake, alice)
    service_name = f"notebook-{notebook.pk}"
    assert fake.get("", "services", NS, service_name) is None  # made once the job runs, not before

    answering(monkeypatch)
    assert services.refresh(notebook.pk) == NotebookState.READY
    service = fake.get("", "services", NS, service_name)
    assert service is not None  # the fake validated it with kubernetes-validate (strict)
    assert service["spec"]["type"] == "ClusterIP"
    [pod] = [p for p in fake.items("", "pods") if p["metadata"]["namespace"] == NS]
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    job_object = fake.get("batch.volcano.sh", "jobs", NS, name)
    assert job_object is not None
    [owner] = service["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", name, job_object["metadata"]["uid"])
    notebook.refresh_from_db()
    assert notebook.server_url == f"http://{service_name}.{NS}.svc:8888"
    assert services.refresh(notebook.pk) == NotebookState.READY  # a second refresh makes nothing twice
    assert len(fake.items("", "services")) == 1

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.stop(alice, notebook)
    assert fake.get("", "services", NS, service_name) is None  # deleted by the portal, at once
    assert fake.get("batch.volcano.sh", "jobs", NS, name) is not None  # the job goes by the cancel task
    for callback in callbacks:
        callback()
    assert fake.get("batch.volcano.sh", "jobs", NS, name) is None  # its pods go with it (Volcano's work)


def test_culling_an_idle_notebook_deletes_its_service_and_its_job(
    grid: SimulatorBackend, portal_on_fake: FakeApiServer, alice: User, monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any, settings: Settings,
) -> None:  # fmt: skip
    fake = portal_on_fake
    settings.NOTEBOOK_IDLE_S, settings.NOTEBOOK_WARN_S = 600, 60
    notebook, name = running_on_fake(fake, alice)
    answering(monkeypatch)
    assert services.refresh(notebook.pk) == NotebookState.READY
    assert fake.get("", "services", NS, f"notebook-{notebook.pk}") is not None

    later = timezone.now() + timedelta(minutes=15)  # kernel and GPUs idle (no telemetry) for longer than NOTEBOOK_IDLE_S
    notebook = Notebook.objects.select_related("job", "owner").get(pk=notebook.pk)
    assert services.judge(notebook, later).action == culling.Action.WARN
    with django_capture_on_commit_callbacks(execute=True):
        decision = services.judge(notebook, later + timedelta(seconds=60))
    assert decision.action == culling.Action.CULL
    notebook.refresh_from_db()
    assert (notebook.state, notebook.end_reason) == (NotebookState.ENDED, EndReason.IDLE)
    assert fake.get("", "services", NS, f"notebook-{notebook.pk}") is None
    assert fake.get("batch.volcano.sh", "jobs", NS, name) is None


def test_a_service_the_cluster_refuses_fails_the_notebook_with_the_clusters_reason(
    grid: SimulatorBackend, portal_on_fake: FakeApiServer, alice: User
) -> None:
    fake = portal_on_fake
    notebook, _ = running_on_fake(fake, alice)
    fake.forbid("services")  # RBAC without the services rule
    assert services.refresh(notebook.pk) == NotebookState.ENDED
    notebook.refresh_from_db()
    assert notebook.end_reason == EndReason.FAILED
    assert "Service was refused" in notebook.detail and "forbidden (403)" in notebook.detail


def test_an_outage_while_the_service_is_made_leaves_the_notebook_starting_and_it_is_made_later(
    grid: SimulatorBackend, portal_on_fake: FakeApiServer, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = portal_on_fake
    notebook, _ = running_on_fake(fake, alice)
    fake.go_away()
    assert services.refresh(notebook.pk) == NotebookState.STARTING
    fake.come_back()
    answering(monkeypatch)
    assert services.refresh(notebook.pk) == NotebookState.READY
    assert fake.get("", "services", NS, f"notebook-{notebook.pk}") is not None
