"""Every object the Kubernetes backend produces is valid for the real CRDs and for Kubernetes itself.

Custom resources are checked against the project's copies of the CRD schemas (schemas/crds/),
their CEL rules (`x-kubernetes-validations`) included;
core objects (pods, namespaces, priority classes, RBAC) with kubernetes-validate, offline.
These tests need no server.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cluster.backends.base import JobRequest
from cluster.backends.kubernetes import manifests, rbac
from cluster.backends.kubernetes.manifests import ManifestConfig, ManifestError
from cluster.gpus import GPU_MODELS
from quotas import volcano
from tests.k8s.crd_schemas import CelRule, crd_for, load_crds

K8S_VERSION = "1.33"
CONFIG = ManifestConfig()


def request(**changes: Any) -> JobRequest:
    fields: dict[str, Any] = dict(
        portal_job_id=42,
        name="resnet sweep #3 (lr=0.1)",
        kind="training",
        team="vision",
        user="alice.o'neil@example.org",
        gpu_model="a100",
        gpus_per_node=4,
        nodes=1,
        node_names=(),
        walltime_s=7200,
        image="nvcr.io/nvidia/pytorch:24.05-py3",
        command=("python", "train.py", "--out", "$HOME/run", "--tag", "$(SECRET)"),
        priority_class="standard",
        checkpoint_dir="/checkpoints/resnet",
        env={"LR": "0.1", "NOTE": "costs $$ and $(X)"},
    )
    fields.update(changes)
    return JobRequest(**fields)


def assert_valid_custom_resource(obj: dict[str, Any]) -> None:
    crd = crd_for(obj["apiVersion"], obj["kind"])
    assert crd.errors(obj) == []
    assert crd.unknown_fields(obj) == []
    assert crd.cel_errors(obj) == []  # the CRD's CEL rules, as on a create
    assert crd.cel_errors(obj, old=obj) == []  # and its transition rules, as on an update that keeps every field


def assert_valid_core(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def pods_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod each replica would run, as a Pod object kubernetes-validate can check."""
    if job["kind"] == "PyTorchJob":
        templates = [spec["template"] for spec in job["spec"]["pytorchReplicaSpecs"].values()]
    else:
        templates = [task["template"] for task in job["spec"]["tasks"]]
    return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **t["metadata"]}, "spec": t["spec"]} for t in templates]


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out, i = "", 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out, i = out + "$", i + 2
                continue
            if text[i + 1] == "(" and (end := text.find(")", i + 2)) != -1:
                name = text[i + 2 : end]
                out, i = out + env.get(name, f"$({name})"), end + 1
                continue
        out, i = out + text[i], i + 1
    return out


# --- jobs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"kind": "simulation", "nodes": 3, "gpus_per_node": 8},
        {"kind": "rendering", "gpus_per_node": 0, "checkpoint_dir": "", "command": ()},
        {"node_names": ("gpu-a100-1",), "priority_class": "critical"},
    ],
)
def test_it_builds_volcano_jobs_the_crd_accepts(changes: dict[str, Any]) -> None:
    job = manifests.job_manifest(request(**changes), CONFIG)
    assert job["apiVersion"] == "batch.volcano.sh/v1alpha1" and job["kind"] == "Job"
    assert_valid_custom_resource(job)
    for pod in pods_of(job):
        assert_valid_core(pod)


def test_a_volcano_job_is_a_gang_in_the_teams_queue_and_namespace() -> None:
    job = manifests.job_manifest(request(kind="simulation", nodes=3, gpus_per_node=8), CONFIG)
    spec = job["spec"]
    assert job["metadata"]["name"] == "gp-42" and job["metadata"]["namespace"] == "team-vision"
    assert spec["schedulerName"] == "volcano" and spec["queue"] == "team-vision-a100"
    assert spec["minAvailable"] == 3 and spec["tasks"][0]["replicas"] == 3
    pod = spec["tasks"][0]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 8}}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["priorityClassName"] == "standard" and pod["activeDeadlineSeconds"] == 7200


def test_multi_node_training_is_a_pytorchjob_gang_scheduled_by_volcano() -> None:
    job = manifests.job_manifest(request(nodes=4), CONFIG)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert_valid_custom_resource(job)
    for pod in pods_of(job):
        assert_valid_core(pod)
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 3
    policy = job["spec"]["runPolicy"]
    assert policy["schedulingPolicy"] == {"minAvailable": 4, "queue": "team-vision-a100", "priorityClass": "standard"}
    assert policy["activeDeadlineSeconds"] == 7200
    pod = specs["Worker"]["template"]["spec"]
    assert pod["schedulerName"] == "volcano" and pod["containers"][0]["name"] == "pytorch"


def test_single_node_training_is_a_volcano_job() -> None:
    assert manifests.job_manifest(request(nodes=1), CONFIG)["kind"] == "Job"


def test_every_object_and_pod_carries_the_portal_job_id() -> None:
    for job in (manifests.job_manifest(request(), CONFIG), manifests.job_manifest(request(nodes=2), CONFIG)):
        assert job["metadata"]["labels"][manifests.JOB_ID_LABEL] == "42"
        for pod in pods_of(job):
            assert pod["metadata"]["labels"][manifests.JOB_ID_LABEL] == "42"


def test_user_text_is_only_a_sanitised_label_or_a_verbatim_annotation() -> None:
    job = manifests.job_manifest(request(), CONFIG)
    labels, annotations = job["metadata"]["labels"], job["metadata"]["annotations"]
    assert labels[manifests.USER_LABEL] == "alice.o-neil-example.org"
    assert annotations[manifests.JOB_NAME_ANNOTATION] == "resnet sweep #3 (lr=0.1)"
    assert annotations[manifests.USER_ANNOTATION] == "alice.o'neil@example.org"
    assert "resnet" not in job["metadata"]["name"]


@pytest.mark.parametrize("text", ["", "---", "a" * 100, "ünïcødé user", "-x-", "a..b__c", "name with spaces."])
def test_label_values_always_have_the_label_syntax(text: str) -> None:
    value = manifests.label_value(text)
    assert len(value) <= 63 and re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value)


def test_commands_are_argument_lists_that_survive_the_kubelets_expansion() -> None:
    req = request()
    container = manifests.job_manifest(req, CONFIG)["spec"]["tasks"][0]["template"]["spec"]["containers"][0]
    env = {e["name"]: kubelet_expand(e["value"], {}) for e in container["env"]}
    assert [kubelet_expand(a, {"SECRET": "leaked", "HOME": "/root"}) for a in container["command"]] == list(req.command)
    assert env["NOTE"] == "costs $$ and $(X)" and env["PORTAL_JOB_ID"] == "42"
    assert "args" not in container and not any(a in ("sh", "-c", "bash") for a in container["command"][:1])


def test_the_checkpoint_directory_is_a_pvc_or_an_empty_dir() -> None:
    pvc = manifests.job_manifest(request(), CONFIG)["spec"]["tasks"][0]["template"]["spec"]
    assert pvc["volumes"] == [{"name": "checkpoint", "persistentVolumeClaim": {"claimName": "checkpoints"}}]
    assert pvc["containers"][0]["volumeMounts"] == [{"name": "checkpoint", "mountPath": "/checkpoints/resnet"}]
    scratch = manifests.job_manifest(request(), ManifestConfig(checkpoint_volume="emptydir"))["spec"]["tasks"][0]["template"][
        "spec"
    ]
    assert scratch["volumes"] == [{"name": "checkpoint", "emptyDir": {}}]


def test_placement_from_the_portal_pins_the_pods_to_its_nodes() -> None:
    pod = manifests.job_manifest(request(node_names=("n2", "n1")), CONFIG)["spec"]["tasks"][0]["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"] == [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1", "n2"]}]


@pytest.mark.parametrize(
    "changes",
    [
        {"gpu_model": "tpu"},
        {"checkpoint_dir": "relative/path"},
        {"checkpoint_dir": "/a/../etc"},
        {"priority_class": "Not A Name"},
        {"team": "Bad_Team"},
        {"image": ""},
        {"portal_job_id": 0},
    ],
)
def test_requests_kubernetes_cannot_express_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ManifestError):
        manifests.job_manifest(request(**changes), CONFIG)


def test_every_gpu_model_has_a_gpu_feature_discovery_product_label() -> None:
    for key, model in GPU_MODELS.items():
        value = manifests.product_label(key)
        # A MIG slice's node carries the physical GPU's label; its allocatable resources tell the slice.
        expected = model.shares if model.sharing == "mig" else key
        assert " " not in value and manifests.model_for_product(value) == expected


@pytest.mark.parametrize(
    ("model", "resource", "product"),
    [
        ("a100-1g.10gb", "nvidia.com/mig-1g.10gb", "NVIDIA-A100-SXM4-80GB"),
        ("h100-3g.40gb", "nvidia.com/mig-3g.40gb", "NVIDIA-H100-80GB-HBM3"),
        ("l4-shared", "nvidia.com/gpu.shared", "NVIDIA-L4-SHARED"),
    ],
)
def test_a_job_on_a_shared_gpu_asks_for_the_device_plugins_resource_of_it(model: str, resource: str, product: str) -> None:
    job = manifests.job_manifest(request(gpu_model=model, gpus_per_node=1, nodes=1), CONFIG)
    assert_valid_custom_resource(job)
    for pod in pods_of(job):
        assert_valid_core(pod)
        [container] = pod["spec"]["containers"]
        assert container["resources"]["limits"] == {resource: 1}
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": product}
    queue = job["spec"]["queue"]
    assert manifests.DNS_LABEL_RE.fullmatch(queue) and "." not in queue


@pytest.mark.parametrize(
    ("allocatable", "product", "expected"),
    [
        ({"nvidia.com/gpu": "8", "cpu": "96"}, "NVIDIA-A100-SXM4-80GB", ("a100", 8)),
        ({"nvidia.com/mig-1g.10gb": "28", "nvidia.com/gpu": "0"}, "NVIDIA-A100-SXM4-80GB", ("a100-1g.10gb", 28)),
        ({"nvidia.com/mig-3g.40gb": "4", "nvidia.com/mig-1g.10gb": "2"}, "NVIDIA-H100-80GB-HBM3", ("h100-3g.40gb", 4)),
        ({"nvidia.com/gpu.shared": "16"}, "NVIDIA-L4-SHARED", ("l4-shared", 16)),
        ({"cpu": "8"}, "", ("", 0)),
        ({"nvidia.com/gpu": "1.5"}, "NVIDIA-L4", ("l4", 0)),
    ],
)
def test_a_nodes_gpu_model_and_count_come_from_its_allocatable_gpu_resources(
    allocatable: dict[str, str], product: str, expected: tuple[str, int]
) -> None:
    assert manifests.node_gpus(allocatable, product) == expected


def test_a_shared_models_queue_counts_its_own_resource() -> None:
    queue = volcano.queue(volcano.QueueQuota("vision", "a100-1g.10gb", 7, 14), CONFIG)
    assert_valid_custom_resource(queue)
    assert queue["metadata"]["name"] == "team-vision-a100-1g-10gb"
    assert queue["spec"]["capability"] == {"nvidia.com/mig-1g.10gb": 14}
    assert queue["spec"]["deserved"] == {"nvidia.com/mig-1g.10gb": 7}


# --- queues, priority classes, namespaces, RBAC -------------------------------------------------

SEED_QUEUE = """
apiVersion: scheduling.volcano.sh/v1beta1
kind: Queue
metadata: {name: team-vision}
spec:
  weight: 2
  capability:
    resources:
      - {name: nvidia.com/gpu, quantity: 16}
  dispatchPolicy: fifo
"""


def test_the_seeds_sample_queue_is_not_valid_for_the_real_crd() -> None:
    seed = yaml.safe_load(SEED_QUEUE)
    crd = crd_for(seed["apiVersion"], seed["kind"])
    assert any(path.startswith("spec.capability.resources") for path, _ in crd.errors(seed))
    assert crd.unknown_fields(seed) == ["spec.dispatchPolicy"]


@pytest.mark.parametrize("lendable", [True, False])
def test_quotas_compile_to_valid_queues(lendable: bool) -> None:
    quota = volcano.QueueQuota("vision", "a100", guarantee=4, limit=12, weight=3, lendable=lendable)
    q = volcano.queue(quota, CONFIG)
    assert_valid_custom_resource(q)
    assert q["metadata"]["name"] == "team-vision-a100"
    assert q["spec"]["capability"] == {"nvidia.com/gpu": 12} and q["spec"]["deserved"] == {"nvidia.com/gpu": 4}
    assert q["spec"]["weight"] == 3 and q["spec"]["reclaimable"] is True
    assert ("guarantee" in q["spec"]) is not lendable


def test_a_queue_below_its_guarantee_is_refused() -> None:
    with pytest.raises(ManifestError):
        volcano.queue(volcano.QueueQuota("vision", "a100", guarantee=8, limit=4), CONFIG)


def test_priority_classes_namespaces_and_rbac_are_valid_kubernetes_objects() -> None:
    objects = [
        volcano.priority_class(volcano.Priority("critical", 1000, description="never preempted")),
        volcano.priority_class(volcano.Priority("preemptible", 10, preemptible=True)),
        rbac.team_namespace("vision", CONFIG),
        *rbac.rbac("gpu-grid-portal", "gpu-grid-portal"),
    ]
    for obj in objects:
        assert_valid_core(obj)
    assert objects[1]["preemptionPolicy"] == "Never" and objects[0]["preemptionPolicy"] == "PreemptLowerPriority"


def test_the_rbac_covers_every_resource_the_backend_touches() -> None:
    granted = {(g, r) for rule in rbac.portal_rules() for g in rule["apiGroups"] for r in rule["resources"]}
    needed = {
        ("", "nodes"),
        ("", "pods"),
        ("", "pods/eviction"),
        ("", "pods/log"),
        ("", "services"),
        ("batch.volcano.sh", "jobs"),
        ("kubeflow.org", "pytorchjobs"),
        ("scheduling.volcano.sh", "queues"),
        ("cluster.x-k8s.io", "machinedeployments"),
        ("scheduling.k8s.io", "priorityclasses"),
    }
    assert needed <= granted


def test_kubernetes_validate_works_offline_from_its_bundled_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("kubernetes-validate tried to use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    assert_valid_core(rbac.team_namespace("vision", CONFIG))


# --- CEL rules of the CRDs --------------------------------------------------------------------------


def test_every_cel_rule_of_the_crds_compiles_and_the_pytorchjob_queue_rule_is_among_them() -> None:
    rules = {key: crd.cel_rules() for key, crd in load_crds().items()}  # compiles each rule
    queue_rule = CelRule(
        "spec.runPolicy.schedulingPolicy.queue", "self == oldSelf", "spec.runPolicy.schedulingPolicy.queue is immutable", True
    )
    assert queue_rule in rules[("kubeflow.org", "v1", "pytorchjobs")]


def test_a_pytorchjob_update_that_moves_it_to_another_queue_breaks_the_crds_cel_rule() -> None:
    job = manifests.job_manifest(request(nodes=2), CONFIG)
    crd = crd_for(job["apiVersion"], job["kind"])
    moved = copy.deepcopy(job)
    moved["spec"]["runPolicy"]["schedulingPolicy"]["queue"] = "team-render-a100"
    assert crd.cel_errors(moved) == []  # a create has no old object: transition rules do not apply
    assert crd.cel_errors(moved, old=job) == [
        ("spec.runPolicy.schedulingPolicy.queue", "Invalid value: spec.runPolicy.schedulingPolicy.queue is immutable")
    ]


def test_a_rule_without_oldself_is_checked_on_every_manifest() -> None:
    """Volcano's CRD has no CEL rules (its admission webhook checks jobs), so a rule is added to a copy of
    its schema: the gang may not need more pods than the job's task has, as the webhook insists."""
    job = manifests.job_manifest(request(nodes=2, kind="simulation"), CONFIG)
    real = crd_for(job["apiVersion"], job["kind"])
    schema = copy.deepcopy(real.schema)
    rule = {
        "rule": "self.tasks.exists(t, t.replicas >= self.minAvailable)",
        "message": "minAvailable is more than the job's pods",
    }
    schema["properties"]["spec"]["x-kubernetes-validations"] = [rule]
    crd = dataclasses.replace(real, schema=schema)
    assert crd.cel_errors(job) == []
    job["spec"]["minAvailable"] = 3
    assert crd.cel_errors(job) == [("spec", "Invalid value: minAvailable is more than the job's pods")]
