"""The Kubernetes backend: Volcano Jobs and Kubeflow PyTorchJobs, node cordon/drain, Cluster API bursts.

Every job object is named `gp-<portal id>` in its team's namespace and labelled with the portal
id, so a repeated submit finds the first one (409 AlreadyExists) instead of creating a second,
and sync finds jobs by label after a crash. Writes that replace an object carry its
resourceVersion; a 409 on such a write means someone else changed it, so the backend reads it
again and retries a bounded number of times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from cluster.backends.base import BackendRejected, ClusterBackend, DrainReport, JobRequest, RemoteJob, RemoteJobState, RemoteNode
from cluster.backends.kubernetes import manifests, status
from cluster.backends.kubernetes.errors import ConflictError, NotFoundError, TooManyRequests
from cluster.backends.kubernetes.manifests import JOB_ID_LABEL, MACHINE_DEPLOYMENT_API, PYTORCH_JOB_API, VOLCANO_JOB_API, Manifest

if TYPE_CHECKING:
    from cluster.backends.kubernetes.api import KubeApi

log = logging.getLogger(__name__)
JOB_APIS = (VOLCANO_JOB_API, PYTORCH_JOB_API)
SELECTOR_CHUNK = 100  # ids per label selector, to keep list URLs short
EXPORTER_LOOKUPS = 20  # exporter pods looked up by name per call, beyond the DaemonSet's listing


def parse_burst_machinedeployments(value: Any) -> dict[str, tuple[str, str]]:
    """Pool → (namespace, MachineDeployment) from a mapping or "pool=ns/name,pool2=ns/name"."""
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"K8S_BURST_MACHINEDEPLOYMENTS: expected pool=namespace/name items, got {value!r}")
        value = {k.strip(): v.strip() for k, v in pairs}
    result: dict[str, tuple[str, str]] = {}
    for pool, target in dict(value or {}).items():
        namespace, _, name = target.partition("/") if isinstance(target, str) else tuple(target)
        if not namespace or not name:
            raise ValueError(f"K8S_BURST_MACHINEDEPLOYMENTS[{pool!r}]: expected namespace/name, got {target!r}")
        result[str(pool)] = (namespace, name)
    return result


@dataclass(frozen=True)
class KubeSettings:
    """The backend's settings; read from django.conf.settings when the backend is made."""

    kubeconfig: str = ""
    context: str = ""
    in_cluster: bool = False
    timeout_s: float = 10.0
    manifest: manifests.ManifestConfig = field(default_factory=manifests.ManifestConfig)
    node_pool_label: str = f"{manifests.DOMAIN}/pool"
    burst_machinedeployments: dict[str, tuple[str, str]] = field(default_factory=dict)
    conflict_retries: int = 3
    exporter_selector: str = "app=nvidia-dcgm-exporter"

    @classmethod
    def from_django(cls) -> KubeSettings:
        s = settings
        return cls(
            kubeconfig=getattr(s, "K8S_KUBECONFIG", ""),
            context=getattr(s, "K8S_CONTEXT", ""),
            in_cluster=bool(getattr(s, "K8S_IN_CLUSTER", False)),
            timeout_s=float(getattr(s, "K8S_TIMEOUT_S", 10.0)),
            manifest=manifests.ManifestConfig(
                namespace_prefix=getattr(s, "K8S_NAMESPACE_PREFIX", "team-"),
                queue_prefix=getattr(s, "K8S_QUEUE_PREFIX", "team-"),
                scheduler_name=getattr(s, "K8S_SCHEDULER_NAME", "volcano"),
                checkpoint_volume=getattr(s, "K8S_CHECKPOINT_VOLUME", "pvc"),
                checkpoint_claim=getattr(s, "K8S_CHECKPOINT_CLAIM", "checkpoints"),
                default_image=getattr(s, "K8S_DEFAULT_IMAGE", ""),
            ),
            node_pool_label=getattr(s, "K8S_NODE_POOL_LABEL", f"{manifests.DOMAIN}/pool"),
            burst_machinedeployments=parse_burst_machinedeployments(getattr(s, "K8S_BURST_MACHINEDEPLOYMENTS", {})),
            conflict_retries=int(getattr(s, "K8S_CONFLICT_RETRIES", 3)),
            exporter_selector=getattr(s, "K8S_EXPORTER_SELECTOR", "app=nvidia-dcgm-exporter"),
        )


class KubernetesBackend(ClusterBackend):
    """Drives a Kubernetes cluster with Volcano, the Kubeflow training operator and Cluster API."""

    name = "kubernetes"

    def __init__(self, api: KubeApi | None = None, options: KubeSettings | None = None) -> None:
        self.options = options or KubeSettings.from_django()
        self._api = api

    @property
    def api(self) -> KubeApi:
        """The API connection, made on first use so building the backend never touches the network."""
        if self._api is None:
            # Imported here: the client library is slow to import and only this backend needs it.
            from cluster.backends.kubernetes.api import Connection, KubeApi, load_configuration

            o = self.options
            connection = Connection(o.kubeconfig, o.context, o.in_cluster, o.timeout_s)
            self._api = KubeApi(load_configuration(connection), o.timeout_s)
        return self._api

    # --- jobs -------------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> str:
        try:
            body = manifests.job_manifest(request, self.options.manifest)
        except manifests.ManifestError as exc:
            raise BackendRejected(f"job #{request.portal_job_id} cannot run on Kubernetes: {exc}") from exc
        group, version, plural, kind = PYTORCH_JOB_API if manifests.uses_pytorchjob(request) else VOLCANO_JOB_API
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        action = f"create {kind} {namespace}/{name}"
        try:
            self.api.call(
                action, self.api.custom.create_namespaced_custom_object, group, version, namespace, plural, body,
                field_validation="Strict",
            )  # fmt: skip
        except ConflictError:
            self._check_same_job(group, version, plural, namespace, name, request.portal_job_id)
            log.info("%s: already exists with the same portal id; not submitting again", action)
        return status.backend_job_id(plural, namespace, name)

    def _check_same_job(self, group: str, version: str, plural: str, namespace: str, name: str, portal_id: int) -> None:
        """After AlreadyExists: the object must be this portal job's, or the name was taken by someone else."""
        existing = self.api.call(
            f"get {plural} {namespace}/{name}",
            self.api.custom.get_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
        )
        label = (existing.get("metadata", {}).get("labels") or {}).get(JOB_ID_LABEL)
        if label != str(portal_id):
            raise BackendRejected(f"{plural} {namespace}/{name} exists but is not portal job #{portal_id} (label {label!r})")

    def cancel(self, backend_job_id: str) -> None:
        plural, namespace, name = self._split(backend_job_id)
        group, version = next((g, v) for g, v, p, _ in JOB_APIS if p == plural)
        try:
            self.api.call(
                f"delete {plural} {namespace}/{name}", self.api.custom.delete_namespaced_custom_object,
                group, version, namespace, plural, name, propagation_policy="Background",
            )  # fmt: skip
        except NotFoundError:
            return  # already gone: cancelling an unknown or finished job is not an error

    @staticmethod
    def _split(backend_job_id: str) -> tuple[str, str, str]:
        try:
            return status.split_backend_job_id(backend_job_id)
        except ValueError:
            raise BackendRejected(f"{backend_job_id!r} is not a Kubernetes backend job id") from None

    def list_jobs(self, portal_job_ids: list[int] | None = None) -> list[RemoteJob]:
        if portal_job_ids is not None and not portal_job_ids:
            return []
        found: list[RemoteJob] = []
        for selector in self._selectors(portal_job_ids):
            for api in JOB_APIS:
                found.extend(self._list_kind(api, selector))
        seen = self._pods_seen([r.portal_job_id for r in found if r.state != RemoteJobState.PENDING])
        return sorted((status.with_pods(r, seen.get(r.portal_job_id)) for r in found), key=lambda r: r.portal_job_id)

    def _pods_seen(self, portal_job_ids: list[int]) -> dict[int, status.PodsSeen]:
        """Nodes and exit codes from the pods of jobs that left pending (one list per id chunk; none when
        every job still waits): neither Volcano Jobs nor PyTorchJobs carry them in their own status."""
        pods: list[Manifest] = []
        for selector in self._selectors(portal_job_ids) if portal_job_ids else []:
            listing = self.api.call(
                "list pods of jobs", self.api.core.list_pod_for_all_namespaces, label_selector=selector
            )  # fmt: skip
            pods.extend(listing.get("items") or [])
        return status.pods_by_job(pods)

    @staticmethod
    def _selectors(portal_job_ids: list[int] | None) -> list[str]:
        if portal_job_ids is None:
            return [JOB_ID_LABEL]
        ids = sorted({int(i) for i in portal_job_ids})
        chunks = [ids[i : i + SELECTOR_CHUNK] for i in range(0, len(ids), SELECTOR_CHUNK)]
        return [f"{JOB_ID_LABEL} in ({','.join(map(str, chunk))})" for chunk in chunks]

    def _list_kind(self, api: tuple[str, str, str, str], selector: str) -> list[RemoteJob]:
        group, version, plural, kind = api
        try:
            listing = self.api.call(
                f"list {kind}s", self.api.custom.list_cluster_custom_object, group, version, plural, label_selector=selector
            )
        except NotFoundError:
            # The CRD is not installed (e.g. no training operator): there are no such jobs.
            log.warning("listing %s.%s: the API has no such resource; is its operator installed?", plural, group)
            return []
        to_remote = status.pytorch_remote if plural == PYTORCH_JOB_API[2] else status.volcano_remote
        return [r for r in map(to_remote, listing.get("items") or []) if r is not None]

    def read_log(self, backend_job_id: str, offset: int, limit: int = 500) -> list[str]:
        _, namespace, name = self._split(backend_job_id)
        portal_id = name.removeprefix("gp-")
        pods = self.api.call(
            f"list pods of {namespace}/{name}",
            self.api.core.list_namespaced_pod,
            namespace,
            label_selector=f"{JOB_ID_LABEL}={portal_id}",
        )
        names = sorted(p["metadata"]["name"] for p in pods.get("items") or [])
        if not names:
            return []
        # The first pod by name is the Master of a PyTorchJob (…-master-0) and task 0 of a Volcano Job.
        try:
            text = self.api.call(
                f"read log of pod {namespace}/{names[0]}", self.api.core.read_namespaced_pod_log, names[0], namespace
            )
        except (NotFoundError, BackendRejected):
            return []  # the pod is gone or its container has not started yet
        return str(text or "").splitlines()[offset : offset + limit]

    # --- a job's Service (notebooks) -----------------------------------------------------------

    def ensure_service(self, body: Manifest, backend_job_id: str) -> None:
        """Create a Service beside the job, owned by the job's object: if the portal never deletes it,
        the garbage collector does when the job goes. One already there for the same job is kept."""
        plural, namespace, name = self._split(backend_job_id)
        group, version, _, kind = next(a for a in JOB_APIS if a[2] == plural)
        if body["metadata"]["namespace"] != namespace:
            raise BackendRejected(f"Service {body['metadata']['name']} must be in {namespace}, the job's namespace")
        job = self.api.call(
            f"get {kind} {namespace}/{name}", self.api.custom.get_namespaced_custom_object, group, version, namespace, plural, name
        )  # fmt: skip
        owner = {"apiVersion": f"{group}/{version}", "kind": kind, "name": name, "uid": job["metadata"]["uid"]}
        body = {**body, "metadata": {**body["metadata"], "ownerReferences": [owner]}}
        action = f"create Service {namespace}/{body['metadata']['name']}"
        try:
            self.api.call(action, self.api.core.create_namespaced_service, namespace, body, field_validation="Strict")
        except ConflictError:
            log.info("%s: already exists; kept", action)

    def delete_service(self, namespace: str, name: str) -> None:
        try:
            self.api.call(f"delete Service {namespace}/{name}", self.api.core.delete_namespaced_service, name, namespace)
        except NotFoundError:
            return  # gone already (with its job, or deleted before)

    # --- nodes ------------------------------------------------------------------------------

    def list_nodes(self) -> list[RemoteNode]:
        nodes = self.api.call("list nodes", self.api.core.list_node)
        pods = self.api.call(
            "list running pods",
            self.api.core.list_pod_for_all_namespaces,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        )
        used = status.gpus_by_node(pods.get("items") or [])
        burst = self.options.burst_machinedeployments
        found = (
            status.remote_node(n, used.get(n["metadata"]["name"], 0), self.options.node_pool_label, burst)
            for n in nodes.get("items") or []
        )
        return sorted((n for n in found if n is not None), key=lambda n: n.name)

    def exporter_nodes(self, names: Collection[str]) -> dict[str, str]:
        """The node of each named exporter pod: one listing of the exporter DaemonSet's pods
        (K8S_EXPORTER_SELECTOR), then, for names it did not hold (an exporter labelled otherwise), a
        lookup by name, at most EXPORTER_LOOKUPS of them."""
        wanted = set(names)
        listing = self.api.call(
            "list exporter pods", self.api.core.list_pod_for_all_namespaces, label_selector=self.options.exporter_selector
        )
        found = status.pod_nodes(listing.get("items") or [], wanted)
        for name in sorted(wanted - found.keys())[:EXPORTER_LOOKUPS]:
            pods = self.api.call(
                f"find pod {name}", self.api.core.list_pod_for_all_namespaces, field_selector=f"metadata.name={name}"
            )  # fmt: skip
            found.update(status.pod_nodes(pods.get("items") or [], wanted))
        return found

    def _patch_node(self, node: str, body: Manifest, what: str) -> None:
        try:
            self.api.call(
                f"{what} node {node}",
                self.api.core.patch_node,
                node,
                body,
                _content_type="application/strategic-merge-patch+json",
            )
        except NotFoundError:
            raise BackendRejected(f"no node called {node!r}") from None

    def cordon(self, node: str, reason: str) -> None:
        annotations = {
            status.CORDON_REASON_ANNOTATION: reason,
            status.DRAIN_ANNOTATION: None,
            status.DRAIN_BLOCKED_ANNOTATION: None,
        }
        self._patch_node(node, {"metadata": {"annotations": annotations}, "spec": {"unschedulable": True}}, "cordon")

    def resume(self, node: str) -> None:
        annotations = {
            status.CORDON_REASON_ANNOTATION: None,
            status.DRAIN_ANNOTATION: None,
            status.DRAIN_BLOCKED_ANNOTATION: None,
        }
        self._patch_node(node, {"metadata": {"annotations": annotations}, "spec": {"unschedulable": None}}, "uncordon")

    def drain(self, node: str, reason: str) -> DrainReport:
        """Cordon the node and evict its pods through the Eviction API, which honours PodDisruptionBudgets.

        Pods a budget protects stay (the API answers 429); they are named in the report the portal
        stores with the node's drain event, and on the node (annotation); a later drain tries them again.
        """
        annotations = {status.CORDON_REASON_ANNOTATION: reason, status.DRAIN_ANNOTATION: "true"}
        self._patch_node(node, {"metadata": {"annotations": annotations}, "spec": {"unschedulable": True}}, "cordon")
        pods = self.api.call(
            f"list pods on {node}", self.api.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}"
        )
        report = DrainReport(node=node)
        for pod in pods.get("items") or []:
            self._evict(pod, report)
        blocked = "; ".join(f"{pod}: {why}" for pod, why in sorted(report.blocked.items()))[:1000]
        self._patch_node(node, {"metadata": {"annotations": {status.DRAIN_BLOCKED_ANNOTATION: blocked or None}}}, "annotate")
        if not report.complete:
            log.warning("drain of %s: %d pod(s) not evicted: %s", node, len(report.blocked), blocked)
        return report

    def _evict(self, pod: Mapping[str, Any], report: DrainReport) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        owners = {o.get("kind") for o in meta.get("ownerReferences") or []}
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if "DaemonSet" in owners or "kubernetes.io/config.mirror" in (meta.get("annotations") or {}) or finished:
            report.skipped.append(key)  # as kubectl drain: DaemonSet and static pods stay, finished pods hold nothing
            return
        try:
            self.api.call(
                f"evict pod {key}", self.api.core.create_namespaced_pod_eviction,
                meta["name"], meta["namespace"], self.api.eviction(meta["name"], meta["namespace"]),
            )  # fmt: skip
            report.evicted.append(key)
        except NotFoundError:
            report.evicted.append(key)  # gone already
        except TooManyRequests as exc:
            report.blocked[key] = exc.detail or "blocked by a PodDisruptionBudget"

    # --- bursting -------------------------------------------------------------------------

    def scale_pool(self, pool: str, nodes: int) -> None:
        target = self.options.burst_machinedeployments.get(pool)
        if target is None:
            raise BackendRejected(
                f"{pool!r} is not an elastic pool (K8S_BURST_MACHINEDEPLOYMENTS has no MachineDeployment for it)"
            )
        if nodes < 0:
            raise BackendRejected("nodes must be >= 0")
        namespace, name = target

        def set_replicas(obj: Manifest) -> Manifest:
            obj["spec"]["replicas"] = nodes
            return obj

        self.update_custom(MACHINE_DEPLOYMENT_API, namespace, name, set_replicas)

    def update_custom(
        self, api: tuple[str, str, str, str], namespace: str, name: str, change: Callable[[Manifest], Manifest]
    ) -> Manifest:
        """Read, change and replace an object with its resourceVersion; on 409 read it again and retry.

        The replace only succeeds against the version that was read, so a concurrent writer's
        change is never overwritten blindly. After `conflict_retries` lost races the conflict
        is raised (retryable).
        """
        group, version, plural, kind = api
        action = f"update {kind} {namespace}/{name}"
        for attempt in range(self.options.conflict_retries + 1):
            current = self.api.call(
                f"get {kind} {namespace}/{name}",
                self.api.custom.get_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
            )
            try:
                replaced: Manifest = self.api.call(
                    action,
                    self.api.custom.replace_namespaced_custom_object,
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    change(current),
                )
                return replaced
            except ConflictError:
                if attempt == self.options.conflict_retries:
                    raise
                log.info("%s: the object changed since it was read (409); reading it again", action)
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # the loop returns or raises

    def watch_nodes(self, timeout_s: int, label_selector: str = "") -> Iterator[tuple[str, RemoteNode | None, str]]:
        """Node events (ADDED/MODIFIED/DELETED) as (type, node or None for non-GPU nodes, name)."""
        burst = self.options.burst_machinedeployments
        kwargs = {"label_selector": label_selector} if label_selector else {}
        for kind, obj in self.api.watch("watch nodes", self.api.core.list_node, timeout_s, **kwargs):
            name = obj.get("metadata", {}).get("name", "")
            yield kind, status.remote_node(obj, 0, self.options.node_pool_label, burst), name

    def wait_for_pool(self, pool: str, nodes: int, timeout_s: int = 600) -> list[str]:
        """Watch until `nodes` Ready nodes are in the pool (or the timeout); returns their names."""
        ready: set[str] = set()
        for kind, node, name in self.watch_nodes(timeout_s, f"{self.options.node_pool_label}={pool}"):
            if kind == "DELETED" or node is None or node.state == "down":
                ready.discard(name)
            else:
                ready.add(name)
            if len(ready) >= nodes:
                break
        return sorted(ready)

    # --- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        info = self.api.call("read the API server version", self.api.version_api.get_code)
        return {"ok": True, "backend": self.name, "server": info.get("gitVersion", "")}
