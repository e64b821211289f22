"""Pure builders: a portal JobRequest becomes a Volcano Job or a Kubeflow PyTorchJob (plain dicts).

No I/O and no Django here, so every manifest can be checked against the real CRD schemas in
tests. Object names come from the portal job id only; user text (job name, user name) reaches
the cluster only as a sanitised label value or as an annotation, and commands stay argument
lists, with `$` doubled so the kubelet's `$(VAR)` expansion cannot change what the user wrote.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster.backends.base import JobRequest
from cluster.gpus import GPU_MODELS

Manifest = dict[str, Any]

DOMAIN = "portal.gpugrid.io"
JOB_ID_LABEL = f"{DOMAIN}/job-id"
TEAM_LABEL = f"{DOMAIN}/team"
USER_LABEL = f"{DOMAIN}/user"
KIND_LABEL = f"{DOMAIN}/kind"
JOB_NAME_ANNOTATION = f"{DOMAIN}/job-name"
USER_ANNOTATION = f"{DOMAIN}/user"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gpu-grid-portal"}

GPU_RESOURCE = "nvidia.com/gpu"
TIMESLICED_RESOURCE = "nvidia.com/gpu.shared"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

QUEUE_API = ("scheduling.volcano.sh", "v1beta1", "queues", "Queue")
MACHINE_DEPLOYMENT_API = ("cluster.x-k8s.io", "v1beta2", "machinedeployments", "MachineDeployment")
VOLCANO_JOB_API = ("batch.volcano.sh", "v1alpha1", "jobs", "Job")
PYTORCH_JOB_API = ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")

DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MOUNT_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")
# A job restored from a checkpoint snapshot mounts the claim made from it (recovery sets it in the job's
# environment; see snapshots.py) instead of its team's claim.
CHECKPOINT_CLAIM_ENV = "GRID_CHECKPOINT_CLAIM"


class ManifestError(ValueError):
    """The request cannot be expressed as a valid Kubernetes object (a refusal, not an outage)."""


@dataclass(frozen=True)
class ManifestConfig:
    """Cluster-side choices the builders need; the backend fills it from settings."""

    namespace_prefix: str = "team-"
    queue_prefix: str = "team-"
    scheduler_name: str = "volcano"
    checkpoint_volume: str = "pvc"  # "pvc": the team's claim below; "emptydir": scratch per pod
    checkpoint_claim: str = "checkpoints"
    default_image: str = ""  # for jobs that name no image (the portal allows that for other backends)
    max_retry: int = 3


# --- names and labels ----------------------------------------------------------------------------


def object_name(portal_job_id: int) -> str:
    """The job's object name: from the portal id only, so it is always a valid DNS-1123 label."""
    if portal_job_id <= 0:
        raise ManifestError(f"portal job id must be positive, not {portal_job_id}")
    return f"gp-{portal_job_id}"


def _dns_label(text: str, what: str) -> str:
    if len(text) > 63 or not DNS_LABEL_RE.fullmatch(text):
        raise ManifestError(f"{what} {text[:70]!r} is not a valid DNS-1123 label")
    return text


def namespace_for(team: str, config: ManifestConfig) -> str:
    """Each team has its own namespace, `<prefix><team slug>`."""
    return _dns_label(f"{config.namespace_prefix}{team}", "namespace")


def queue_for(team: str, gpu_model: str, config: ManifestConfig) -> str:
    """The Volcano queue of a team for one GPU model (quotas are per team and model)."""
    return _dns_label(f"{config.queue_prefix}{team}-{_model_label(gpu_model)}", "queue")


def department_queue_for(department: str, gpu_model: str) -> str:
    """The Volcano queue of a department for one GPU model: the parent of its teams' queues of that model."""
    return _dns_label(f"department-{department}-{_model_label(gpu_model)}", "queue")


def _model_label(gpu_model: str) -> str:
    return gpu_model.replace(".", "-")  # a MIG profile's dot ("a100-1g.10gb") is no DNS label character


def gpu_resource(gpu_model: str) -> str:
    """The extended resource a pod asks for: `nvidia.com/gpu`, or a shared model's (MIG slice, time-sliced)."""
    model = GPU_MODELS.get(gpu_model)
    return model.k8s_resource if model else GPU_RESOURCE


def is_gpu_resource(name: str) -> bool:
    """Whether a resource name is one of NVIDIA's device plugin's GPU resources (whole, MIG or shared)."""
    return name in (GPU_RESOURCE, TIMESLICED_RESOURCE) or name.startswith(MIG_RESOURCE_PREFIX)


def label_value(text: str) -> str:
    """A valid label value from free text: other characters become '-', edges trimmed, 63 at most."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)
    assert LABEL_VALUE_RE.match(cleaned)  # the two substitutions above guarantee the syntax
    return cleaned


def product_label(gpu_model: str) -> str:
    """The `nvidia.com/gpu.product` value GPU Feature Discovery puts on nodes of this model.

    GFD writes the product name with spaces replaced by dashes ("NVIDIA-H100-80GB-HBM3"),
    because label values cannot hold spaces.
    """
    model = GPU_MODELS.get(gpu_model)
    if model is None:
        raise ManifestError(f"unknown GPU model {gpu_model!r}; known: {', '.join(sorted(GPU_MODELS))}")
    return label_value(model.product.replace(" ", "-"))


def model_for_product(product: str) -> str:
    """The portal's GPU model key for a node's product label ('' when unknown); whole GPUs come first."""
    for key in GPU_MODELS:
        if product_label(key) == product:
            return key
    return ""


def node_gpus(allocatable: Mapping[str, Any] | None, product: str) -> tuple[str, int]:
    """A node's GPU model and how many of it it offers, from its allocatable resources and product label.

    Whole GPUs (`nvidia.com/gpu`) first; else time-sliced replicas (`nvidia.com/gpu.shared`, the product
    label ending in -SHARED); else MIG slices (`nvidia.com/mig-<profile>`, the "mixed" strategy). A node
    is one model to the portal: partition a node's GPUs alike (the MIG manager's all-* configurations);
    of several profiles on one node, the one with most slices counts. ('', 0) when it has no GPUs."""
    resources = {k: resource_count(v) for k, v in (allocatable or {}).items() if is_gpu_resource(k)}
    model = model_for_product(product)
    if resources.get(GPU_RESOURCE):
        return model or product.lower()[:20], resources[GPU_RESOURCE]
    if resources.get(TIMESLICED_RESOURCE):  # GFD's product label says -SHARED, as the model's does
        return model or product.lower()[:20], resources[TIMESLICED_RESOURCE]
    slices = sorted(((n, k) for k, n in resources.items() if k.startswith(MIG_RESOURCE_PREFIX) and n), reverse=True)
    if slices:  # the label names the physical GPU; the resource names the slice
        count, name = slices[0]
        return f"{model or product.lower()}-{name.removeprefix(MIG_RESOURCE_PREFIX)}"[:20], count
    return model or product.lower()[:20], 0


def resource_count(raw: Any) -> int:
    """A quantity of an extended resource: a whole number (anything else counts as none)."""
    try:
        return int(str(raw))
    except ValueError:
        return 0


def job_labels(request: JobRequest) -> dict[str, str]:
    """Labels every object and pod of the job carries; the job id label is how sync finds it."""
    return {
        **MANAGED_BY,
        JOB_ID_LABEL: str(request.portal_job_id),
        TEAM_LABEL: _dns_label(request.team, "team"),
        USER_LABEL: label_value(request.user),
        KIND_LABEL: label_value(request.kind),
    }


def job_annotations(request: JobRequest) -> dict[str, str]:
    """Free text the user wrote, kept verbatim where Kubernetes never interprets it."""
    return {JOB_NAME_ANNOTATION: request.name[:1000], USER_ANNOTATION: request.user[:200]}


# --- the pod ----------------------------------------------------------------------------------


def escape_expansion(text: str) -> str:
    """Double every `$` so the kubelet's `$(VAR)` expansion yields exactly the text given."""
    return text.replace("$", "$$")


def _env(request: JobRequest) -> list[dict[str, str]]:
    fixed = {"PORTAL_JOB_ID": str(request.portal_job_id)}
    if request.checkpoint_dir:
        fixed["PORTAL_CHECKPOINT_DIR"] = request.checkpoint_dir
    merged = {**request.env, **fixed}
    return [{"name": k, "value": escape_expansion(v)} for k, v in sorted(merged.items())]


def _checkpoint(request: JobRequest, config: ManifestConfig) -> tuple[list[Manifest], list[Manifest]]:
    """The checkpoint volume and its mount, or nothing when the job has no checkpoint directory."""
    path = request.checkpoint_dir
    if not path:
        return [], []
    if not MOUNT_PATH_RE.fullmatch(path) or "/../" in path + "/" or len(path) > 300:
        raise ManifestError(f"checkpoint_dir {path[:80]!r} is not an absolute path")
    if config.checkpoint_volume == "pvc":
        restored = request.env.get(CHECKPOINT_CLAIM_ENV)
        claim = _dns_label(restored, "restored checkpoint claim") if restored else config.checkpoint_claim
        volume: Manifest = {"name": "checkpoint", "persistentVolumeClaim": {"claimName": claim}}
    elif config.checkpoint_volume == "emptydir":
        volume = {"name": "checkpoint", "emptyDir": {}}
    else:
        raise ManifestError(f"checkpoint volume must be 'pvc' or 'emptydir', not {config.checkpoint_volume!r}")
    return [volume], [{"name": "checkpoint", "mountPath": path}]


def _node_affinity(node_names: tuple[str, ...]) -> Manifest:
    """Pin the pods to the nodes the portal's admission chose for them."""
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": sorted(node_names)}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def container(request: JobRequest, config: ManifestConfig, name: str) -> Manifest:
    """The one container of each pod: image, argv, env, GPUs, checkpoint mount."""
    image = request.image or config.default_image
    if not image:
        raise ManifestError("the job has no container image (and K8S_DEFAULT_IMAGE is not set)")
    if request.gpus_per_node < 0:
        raise ManifestError("gpus_per_node must be >= 0")
    _, mounts = _checkpoint(request, config)
    body: Manifest = {"name": name, "image": image, "env": _env(request)}
    if request.command:
        body["command"] = [escape_expansion(arg) for arg in request.command]
    if request.gpus_per_node:
        body["resources"] = {"limits": {gpu_resource(request.gpu_model): request.gpus_per_node}}
    if mounts:
        body["volumeMounts"] = mounts
    return body


def pod_spec(request: JobRequest, config: ManifestConfig, container_name: str, *, deadline: bool) -> Manifest:
    """The pod every replica runs: GPU model selector, priority class, Volcano as scheduler."""
    volumes, _ = _checkpoint(request, config)
    spec: Manifest = {
        "schedulerName": config.scheduler_name,
        "priorityClassName": _dns_label(request.priority_class, "priority class"),
        "restartPolicy": "Never",
        "nodeSelector": {GPU_PRODUCT_LABEL: product_label(request.gpu_model)},
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [container(request, config, container_name)],
    }
    if deadline and request.walltime_s > 0:
        spec["activeDeadlineSeconds"] = request.walltime_s
    if request.node_names:
        spec["affinity"] = _node_affinity(request.node_names)
    if volumes:
        spec["volumes"] = volumes
    return spec


def pod_template(request: JobRequest, config: ManifestConfig, container_name: str, *, deadline: bool) -> Manifest:
    return {
        "metadata": {"labels": job_labels(request), "annotations": job_annotations(request)},
        "spec": pod_spec(request, config, container_name, deadline=deadline),
    }


def _metadata(request: JobRequest, config: ManifestConfig) -> Manifest:
    return {
        "name": object_name(request.portal_job_id),
        "namespace": namespace_for(request.team, config),
        "labels": job_labels(request),
        "annotations": job_annotations(request),
    }


# --- the two job kinds ---------------------------------------------------------------------------


def uses_pytorchjob(request: JobRequest) -> bool:
    """Multi-node training runs as a Kubeflow PyTorchJob; everything else as a Volcano Job."""
    return request.kind == "training" and request.nodes > 1


def volcano_job(request: JobRequest, config: ManifestConfig) -> Manifest:
    """A Volcano Job: one task of `nodes` pods, gang-scheduled (minAvailable) in the team's queue.

    The walltime is the pods' activeDeadlineSeconds (Volcano Jobs have no job-level deadline).
    An evicted pod (a drain, a reclaim) restarts the whole gang so it resumes from its checkpoint.
    """
    if request.nodes < 1:
        raise ManifestError("a job needs at least one node")
    group, version, _, kind = VOLCANO_JOB_API
    spec: Manifest = {
        "schedulerName": config.scheduler_name,
        "queue": queue_for(request.team, request.gpu_model, config),
        "priorityClassName": _dns_label(request.priority_class, "priority class"),
        "minAvailable": request.nodes,
        "maxRetry": config.max_retry,
        "policies": [{"event": "PodEvicted", "action": "RestartJob"}],
        "tasks": [
            {
                "name": "main",
                "replicas": request.nodes,
                "minAvailable": request.nodes,
                "template": pod_template(request, config, "main", deadline=True),
            }
        ],
    }
    if request.nodes > 1:
        spec["plugins"] = {"svc": [], "env": []}  # gang members find each other by hostname
    return {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": _metadata(request, config), "spec": spec}


def pytorch_job(request: JobRequest, config: ManifestConfig) -> Manifest:
    """A Kubeflow PyTorchJob: one Master and `nodes - 1` Workers, gang-scheduled by Volcano.

    The training operator requires the container to be called `pytorch`; it sets MASTER_ADDR,
    WORLD_SIZE and RANK itself and creates the Volcano PodGroup from `schedulingPolicy`.
    """
    if request.nodes < 2:
        raise ManifestError("a PyTorchJob here is for two nodes or more")
    group, version, _, kind = PYTORCH_JOB_API
    template = pod_template(request, config, "pytorch", deadline=False)
    replica = {"restartPolicy": "Never", "template": template}
    spec: Manifest = {
        "nprocPerNode": str(max(1, request.gpus_per_node)),
        "pytorchReplicaSpecs": {
            "Master": {"replicas": 1, **replica},
            "Worker": {"replicas": request.nodes - 1, **replica},
        },
        "runPolicy": {
            "backoffLimit": config.max_retry,
            "cleanPodPolicy": "Running",
            "schedulingPolicy": {
                "minAvailable": request.nodes,
                "queue": queue_for(request.team, request.gpu_model, config),
                "priorityClass": _dns_label(request.priority_class, "priority class"),
            },
        },
    }
    if request.walltime_s > 0:
        spec["runPolicy"]["activeDeadlineSeconds"] = request.walltime_s
    return {"apiVersion": f"{group}/{version}", "kind": kind, "metadata": _metadata(request, config), "spec": spec}


def job_manifest(request: JobRequest, config: ManifestConfig) -> Manifest:
    """The object to create for this request."""
    return pytorch_job(request, config) if uses_pytorchjob(request) else volcano_job(request, config)
