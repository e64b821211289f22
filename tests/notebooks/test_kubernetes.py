"""A notebook on Kubernetes: its job's pod runs the server, a ClusterIP Service in the team's namespace
selects that pod; both valid against Kubernetes' own schemas (kubernetes-validate, as tests/k8s does)."""

from __future__ import annotations

import kubernetes_validate
from pytest_django import Settings

from cluster.backends.kubernetes import manifests
from cluster.backends.kubernetes.manifests import ManifestConfig
from cluster.simulator.backend import SimulatorBackend
from jobs import services as job_services
from notebooks import launch, services
from portal.models import User
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
