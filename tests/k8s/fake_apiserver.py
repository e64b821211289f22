"""A TEST DOUBLE of the Kubernetes API server's HTTP surface, for the Kubernetes backend's tests.

No real API server can run on the development and CI machines, so tests start this small
threaded HTTP server and point the real `kubernetes` client at it. It is not Kubernetes: it
keeps objects in memory, runs no scheduler and no kubelet, and implements only the paths and
conventions the backend relies on, following the API's rules for each:

- create / get / list / watch / replace / merge-patch / delete for nodes, namespaces, pods,
  services, persistentvolumeclaims, poddisruptionbudgets, priorityclasses and the custom resources
  jobs.batch.volcano.sh, queues.scheduling.volcano.sh, podgroups.scheduling.volcano.sh,
  pytorchjobs.kubeflow.org, machinedeployments.cluster.x-k8s.io, and volumesnapshots and
  volumesnapshotclasses of snapshot.storage.k8s.io (validated against the small schemas in
  tests/k8s/snapshot_schemas.py: there are no snapshot CRDs in schemas/crds/);
- every object has a resourceVersion (one global counter); a replace or patch that names an
  older resourceVersion gets 409 Conflict; a replace of a custom resource without one gets 422;
- errors are `Status` objects (`kind: Status`, `reason`, `message`, `details.causes`, `code`);
- custom resources are validated against the CRD schemas in schemas/crds/ (422 with field
  paths), unknown fields are refused under `fieldValidation=Strict` (400) and dropped otherwise,
  and `status` is ignored on create and replace (the status subresource);
- label selectors (`=`, `!=`, `in`, `notin`, exists, `!`) and the pod field selectors
  `spec.nodeName` and `status.phase` (`=`, `!=`);
- `?watch=true` streams WatchEvents as JSON lines (synthetic ADDED events first when no
  resourceVersion is given), until `timeoutSeconds`;
- pods/eviction honours PodDisruptionBudgets (429 TooManyRequests when a budget forbids it).

Switches for tests: `go_away()` / `come_back()` (stop listening, listen again on the same port
with the same objects), `forbid(plural)` (403 as RBAC would), `interfere(plural, ns, name)`
(another writer bumps the object right after each read), and controller stand-ins that set a
Volcano Job's phase or a PyTorchJob's conditions, run a job's pods, create or delete Nodes
when a MachineDeployment's replicas change, and settle a new VolumeSnapshot as the snapshot
controller would (`snapshot_outcome`: ready at once, an error, or pending until `set_snapshot_ready`).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate

from tests.k8s.crd_schemas import CrdVersion, load_crds
from tests.k8s.snapshot_schemas import SNAPSHOT_CRDS

Obj = dict[str, Any]
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
K8S_VERSION = "1.33"
VERSION_INFO = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Resource:
    """One resource the fake serves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    crd: CrdVersion | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


CORE = [
    Resource("", "v1", "nodes", "Node", False),
    Resource("", "v1", "namespaces", "Namespace", False),
    Resource("", "v1", "pods", "Pod", True),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False),
]


class ApiError(Exception):
    """An error answer: becomes a Status object with this code."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return [p for p in [*parts, current.strip()] if p]


def _requirement(req: str) -> tuple[str, str, frozenset[str]]:
    """One selector requirement as (key, operator, values)."""
    if m := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)", req):
        return m[1], m[2], frozenset(v.strip() for v in m[3].split(","))
    if m := re.fullmatch(r"([^\s!=]+)\s*(!=|==|=)\s*(\S*)", req):
        return m[1], "notin" if m[2] == "!=" else "in", frozenset({m[3]})
    if m := re.fullmatch(r"!([^\s!=(),]+)", req):
        return m[1], "!", frozenset()
    if re.fullmatch(r"[^\s!=(),]+", req):
        return req, "exists", frozenset()
    raise ApiError(400, "BadRequest", f"unable to parse requirement: {req!r}")


def _holds(labels: dict[str, str], key: str, op: str, values: frozenset[str]) -> bool:
    if op == "exists":
        return key in labels
    if op == "!":
        return key not in labels
    return (labels.get(key) in values) == (op == "in")


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """A label selector in the API's string syntax, as a predicate over a label map."""
    reqs = [_requirement(r) for r in _split_selector(selector)]
    return lambda labels: all(_holds(labels, *r) for r in reqs)


POD_FIELDS = {"spec.nodeName": ("spec", "nodeName"), "status.phase": ("status", "phase"), "metadata.name": ("metadata", "name")}


def field_matcher(selector: str, resource: Resource) -> Callable[[Obj], bool]:
    tests: list[Callable[[Obj], bool]] = []
    for req in _split_selector(selector):
        m = re.fullmatch(r"([\w.]+)\s*(!=|==|=)\s*(.*)", req)
        if (
            m is None
            or (resource.plural == "pods" and m[1] not in POD_FIELDS)
            or (resource.plural != "pods" and m[1] != "metadata.name")
        ):
            raise ApiError(400, "BadRequest", f'"{req}" is not a known field selector: only "{", ".join(POD_FIELDS)}"')
        path = POD_FIELDS.get(m[1], ("metadata", "name"))
        want, negate = m[3], m[2] == "!="
        tests.append((lambda p, w, n: lambda o: ((o.get(p[0]) or {}).get(p[1], "") == w) != n)(path, want, negate))
    return lambda obj: all(t(obj) for t in tests)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also what a strategic merge patch does for the maps patched here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Store:
    """All objects, the event log for watches, and the test switches, under one lock."""

    resources: dict[tuple[str, str, str], Resource]
    objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = field(default_factory=dict)
    events: list[tuple[int, str, str, str, Obj]] = field(default_factory=list)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    interfering: dict[tuple[str, str, str], int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    on_write: list[Callable[[Resource, Obj], None]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    rv: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    last_rv: int = 0
    stopping: bool = False

    def bucket(self, res: Resource) -> dict[tuple[str, str], Obj]:
        return self.objects.setdefault((res.group, res.plural), {})

    def record(self, res: Resource, kind: str, obj: Obj) -> Obj:
        """Give the object a new resourceVersion and tell the watchers."""
        self.last_rv = next(self.rv)
        obj["metadata"]["resourceVersion"] = str(self.last_rv)
        self.events.append((self.last_rv, res.group, res.plural, kind, copy.deepcopy(obj)))
        self.cond.notify_all()
        return obj

    def put(self, res: Resource, obj: Obj, kind: str) -> Obj:
        meta = obj["metadata"]
        self.bucket(res)[(meta.get("namespace", ""), meta["name"])] = obj
        return self.record(res, kind, obj)


class FakeApiServer:
    """The test double: start it, point a kubernetes client Configuration at `url`, flip switches."""

    def __init__(self) -> None:
        resources = list(CORE)
        for crd in [*load_crds().values(), *SNAPSHOT_CRDS]:
            resources.append(Resource(crd.group, crd.version, crd.plural, crd.kind, crd.namespaced, crd))
        self.store = Store({(r.group, r.plural, r.version): r for r in resources})
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._joining: set[str] = set()
        self.store.on_write.append(self._machinedeployment_controller)
        self.snapshot_outcome = "ready"  # what the snapshot controller makes of a new VolumeSnapshot: ready, error, pending
        self.store.on_write.append(self._snapshot_controller)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeApiServer:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self.store.stopping = False
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def go_away(self) -> None:
        """Stop listening (connections are refused); objects are kept for `come_back`."""
        with self.store.cond:
            self.store.stopping = True
            self.store.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def come_back(self) -> None:
        self.start()

    def stop(self) -> None:
        self.go_away()

    # --- resources ----------------------------------------------------------------------------

    def resource(self, group: str, plural: str, version: str | None = None) -> Resource:
        for (g, p, v), res in self.store.resources.items():
            if g == group and p == plural and (version is None or v == version):
                if version is None and res.crd is not None and not res.crd.storage:
                    continue
                return res
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural}.{group}/{version})")

    def get(self, group: str, plural: str, namespace: str, name: str) -> Obj | None:
        with self.store.cond:
            obj = self.store.bucket(self.resource(group, plural)).get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    def items(self, group: str, plural: str) -> list[Obj]:
        with self.store.cond:
            return [copy.deepcopy(o) for o in self.store.bucket(self.resource(group, plural)).values()]

    def add(self, group: str, plural: str, obj: Obj) -> Obj:
        """Create an object directly (as another client or a controller would)."""
        res = self.resource(group, plural)
        with self.store.cond:
            return copy.deepcopy(_create(self.store, res, copy.deepcopy(obj), obj.get("metadata", {}).get("namespace", ""), {}))

    def modify(self, group: str, plural: str, namespace: str, name: str, change: Callable[[Obj], None]) -> Obj:
        """Change an object in place as a controller would (status included), with a new resourceVersion."""
        res = self.resource(group, plural)
        with self.store.cond:
            obj = self.store.bucket(res)[(namespace, name)]
            change(obj)
            self.store.record(res, "MODIFIED", obj)
            for hook in self.store.on_write:
                hook(res, obj)
            return copy.deepcopy(obj)

    def remove(self, group: str, plural: str, namespace: str, name: str) -> None:
        res = self.resource(group, plural)
        with self.store.cond:
            _delete(self.store, res, namespace, name)

    # --- switches --------------------------------------------------------------------------------

    def forbid(self, plural: str) -> None:
        """Answer 403 to every request on this resource, as RBAC does for a missing permission."""
        self.store.forbidden.add(plural)

    def allow(self, plural: str) -> None:
        self.store.forbidden.discard(plural)

    def interfere(self, plural: str, namespace: str, name: str, times: int = 1) -> None:
        """After each of the next `times` reads of this object, another writer changes it."""
        self.store.interfering[(plural, namespace, name)] = times

    # --- seeding helpers ---------------------------------------------------------------------------

    def add_namespace(self, name: str) -> Obj:
        return self.add("", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def add_node(
        self,
        name: str,
        *,
        gpus: int = 8,
        product: str = "NVIDIA-A100-SXM4-80GB",
        pool: str = "",
        ready: bool = True,
        pool_label: str = "portal.gpugrid.io/pool",
        resource: str = "nvidia.com/gpu",
    ) -> Obj:
        labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(gpus)}
        if pool:
            labels[pool_label] = pool
        condition = {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status" if ready else "container runtime is down",
        }
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", resource: str(gpus)}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {"capacity": resources, "allocatable": resources, "conditions": [condition]},
        }
        return self.add("", "nodes", node)

    def add_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        *,
        labels: dict[str, str] | None = None,
        gpus: int = 0,
        owner_kind: str = "",
        phase: str = "Running",
        log: str = "",
    ) -> Obj:
        container: Obj = {"name": "main", "image": "busybox"}
        if gpus:
            container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}}
        meta: Obj = {"name": name, "namespace": namespace, "labels": labels or {}}
        if owner_kind:
            meta["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner_kind,
                    "name": f"{name}-owner",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                }
            ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {"nodeName": node, "containers": [container]},
            "status": {"phase": phase},
        }
        created = self.add("", "pods", pod)
        if log:
            self.store.logs[(namespace, name)] = log
        return created

    def add_pdb(self, namespace: str, name: str, match_labels: dict[str, str], min_available: int) -> Obj:
        pdb = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": match_labels}},
        }
        return self.add("policy", "poddisruptionbudgets", pdb)

    def add_machinedeployment(
        self, namespace: str, name: str, *, pool: str, replicas: int = 0, gpus: int = 4, product: str = "NVIDIA-A10G"
    ) -> Obj:
        """A Cluster API MachineDeployment whose machines become GPU nodes of `pool`."""
        md = {
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "MachineDeployment",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": {"fake/pool": pool, "fake/gpus": str(gpus), "fake/product": product},
            },
            "spec": {
                "clusterName": "gpu-grid",
                "replicas": replicas,
                "selector": {"matchLabels": {"cluster.x-k8s.io/deployment-name": name}},
                "template": {
                    "metadata": {"labels": {"cluster.x-k8s.io/deployment-name": name}},
                    "spec": {
                        "clusterName": "gpu-grid",
                        "version": "v1.33.0",
                        "bootstrap": {
                            "configRef": {
                                "apiGroup": "bootstrap.cluster.x-k8s.io",
                                "kind": "KubeadmConfigTemplate",
                                "name": f"{name}-bootstrap",
                            }
                        },
                        "infrastructureRef": {
                            "apiGroup": "infrastructure.cluster.x-k8s.io",
                            "kind": "AWSMachineTemplate",
                            "name": f"{name}-machines",
                        },
                    },
                },
            },
        }
        return self.add("cluster.x-k8s.io", "machinedeployments", md)

    # --- controller stand-ins -----------------------------------------------------------------------

    def set_volcano_phase(self, namespace: str, name: str, phase: str, reason: str = "", message: str = "") -> Obj:
        """Set a Volcano Job's status.state as the Volcano controller would."""

        def change(job: Obj) -> None:
            status = job.setdefault("status", {})
            status["state"] = {"phase": phase, "reason": reason, "message": message, "lastTransitionTime": _now()}
            status.setdefault("conditions", []).append({"status": phase, "lastTransitionTime": _now()})

        return self.modify("batch.volcano.sh", "jobs", namespace, name, change)

    def set_pytorch_condition(self, namespace: str, name: str, kind: str, reason: str = "", message: str = "") -> Obj:
        """Add a True condition to a PyTorchJob (the newest wins) as the training operator would."""

        def change(job: Obj) -> None:
            status = job.setdefault("status", {})
            for c in status.get("conditions", []):
                if c["type"] in ("Running", "Created") and kind in ("Succeeded", "Failed"):
                    c["status"] = "False"
            status.setdefault("conditions", []).append(
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": _now(),
                    "lastUpdateTime": _now(),
                }
            )
            if kind == "Running":
                status.setdefault("startTime", _now())
            if kind in ("Succeeded", "Failed"):
                status["completionTime"] = _now()

        return self.modify("kubeflow.org", "pytorchjobs", namespace, name, change)

    def run_pods(self, group: str, plural: str, namespace: str, name: str, nodes: Iterable[str], log: str = "") -> list[str]:
        """Start a job's pods on the given nodes with its template's labels, as its controller would."""
        job = self.get(group, plural, namespace, name)
        assert job is not None, f"no {plural} {namespace}/{name}"
        if plural == "pytorchjobs":
            specs = job["spec"]["pytorchReplicaSpecs"]
            roles = [("master", specs["Master"])] + [("worker", specs["Worker"])] * int(
                specs.get("Worker", {}).get("replicas", 0)
            )
        else:
            task = job["spec"]["tasks"][0]
            roles = [(task["name"], task)] * int(task["replicas"])
        created = []
        counters: dict[str, int] = {}
        for (role, spec), node in zip(roles, nodes, strict=False):
            index = counters[role] = counters.get(role, -1) + 1
            labels = dict(spec["template"]["metadata"].get("labels", {}))
            gpus = int(spec["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
            pod_name = f"{name}-{role}-{index}"
            self.add_pod(namespace, pod_name, node, labels=labels, gpus=gpus, log=log if index == 0 else "")
            created.append(pod_name)
        return created

    def end_pod(self, namespace: str, name: str, exit_code: int, reason: str = "") -> Obj:
        """The kubelet's report of a pod whose container ended: phase and the container's terminated state."""

        def change(pod: Obj) -> None:
            terminated = {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "startedAt": pod["metadata"]["creationTimestamp"],
                "finishedAt": _now(),
            }
            statuses = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": f"{c['image']}@sha256:{'0' * 64}",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
                for c in pod["spec"]["containers"]
            ]
            pod["status"] = {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": statuses}

        return self.modify("", "pods", namespace, name, change)

    def add_claim(self, namespace: str, name: str, storage: str = "100Gi", access: str = "ReadWriteMany") -> Obj:
        """A bound PersistentVolumeClaim (a team's checkpoint volume)."""
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": [access], "storageClassName": "fast-rwx", "resources": {"requests": {"storage": storage}}},
            "status": {"phase": "Bound"},
        }
        return self.add("", "persistentvolumeclaims", claim)

    def set_snapshot_ready(self, namespace: str, name: str, restore_size: str = "") -> Obj:
        """The snapshot controller's report that a VolumeSnapshot is cut and ready to restore from."""

        def change(snapshot: Obj) -> None:
            claim = self.store.bucket(self.resource("", "persistentvolumeclaims")).get(
                (namespace, snapshot["spec"]["source"].get("persistentVolumeClaimName", ""))
            )
            size = restore_size or ((claim or {}).get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "1Gi"))
            snapshot["status"] = {
                "boundVolumeSnapshotContentName": f"snapcontent-{snapshot['metadata']['uid']}",
                "creationTime": _now(),
                "readyToUse": True,
                "restoreSize": size,
            }

        return self.modify("snapshot.storage.k8s.io", "volumesnapshots", namespace, name, change)

    def _snapshot_controller(self, res: Resource, snapshot: Obj) -> None:
        """The external-snapshotter stand-in: a new VolumeSnapshot of a missing claim fails; otherwise `snapshot_outcome`."""
        if res.plural != "volumesnapshots" or "status" in snapshot:
            return
        meta = snapshot["metadata"]
        claim = snapshot["spec"]["source"].get("persistentVolumeClaimName", "")
        missing = (meta["namespace"], claim) not in self.store.bucket(self.resource("", "persistentvolumeclaims"))
        if missing or self.snapshot_outcome == "error":
            why = f"the PVC {claim} not found" if missing else "the CSI driver refused: out of snapshot space"
            snapshot["status"] = {"readyToUse": False, "error": {"message": f"Failed to create snapshot: {why}", "time": _now()}}
            self.store.record(res, "MODIFIED", snapshot)
        elif self.snapshot_outcome == "ready":
            threading.Thread(target=self.set_snapshot_ready, args=(meta["namespace"], meta["name"]), daemon=True).start()

    def _machinedeployment_controller(self, res: Resource, md: Obj) -> None:
        """Cluster API stand-in: after a MachineDeployment changes, Nodes appear or go to match replicas."""
        if res.plural != "machinedeployments":
            return
        annotations = md["metadata"].get("annotations", {})
        name, pool = md["metadata"]["name"], annotations.get("fake/pool", "")
        nodes = self.store.bucket(self.resource("", "nodes"))
        mine = sorted(n for (_, n) in nodes if n.startswith(f"{name}-"))
        wanted = [f"{name}-{i}" for i in range(int(md["spec"].get("replicas", 0)))]
        for node in wanted:
            if node not in mine and node not in self._joining:
                self._joining.add(node)
                threading.Thread(target=self._later_add_node, args=(node, pool, annotations), daemon=True).start()
        for node in mine:
            if node not in wanted:
                _delete(self.store, self.resource("", "nodes"), "", node)

    def _later_add_node(self, node: str, pool: str, annotations: dict[str, str]) -> None:
        time.sleep(0.2)  # machines take a while to join; the watch sees them arrive
        try:
            self.add_node(
                node, gpus=int(annotations.get("fake/gpus", "4")), product=annotations.get("fake/product", ""), pool=pool
            )
        finally:
            self._joining.discard(node)


# --- the verbs (called with the store's lock held) ---------------------------------------------------


def _not_found(res: Resource, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{res.qualified} "{name}" not found', {"name": name, "group": res.group, "kind": res.plural}
    )


def _invalid(res: Resource, name: str, causes: list[tuple[str, str]]) -> ApiError:
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    return ApiError(
        422,
        "Invalid",
        f'{res.kind}.{res.group or "core"} "{name}" is invalid: {text}'[:2000],
        {
            "name": name,
            "group": res.group,
            "kind": res.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
        },
    )


def _check_metadata(res: Resource, obj: Obj) -> list[tuple[str, str]]:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    pattern = DNS_LABEL if res.plural == "namespaces" else DNS_SUBDOMAIN
    causes = []
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not pattern.match(name):
        causes.append(("metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 name is required"))
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if (prefix and not DNS_SUBDOMAIN.match(prefix)) or len(label) > 63 or not LABEL_NAME.match(label):
            causes.append(("metadata.labels", f"Invalid value: {key!r}: not a valid label key"))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(
                (
                    "metadata.labels",
                    f"Invalid value: {value!r}: a valid label must be 63 characters or less, alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
                )
            )
    return causes


def _validate(res: Resource, obj: Obj, query: dict[str, str], old: Obj | None = None) -> Obj:
    """Validate as the API server would (`old`: the stored object, on an update); returns the object as it will be stored."""
    name = (obj.get("metadata") or {}).get("name", "")
    if obj.get("kind") != res.kind or obj.get("apiVersion") != res.api_version:
        raise ApiError(
            400, "BadRequest", f"the body is a {obj.get('apiVersion')}/{obj.get('kind')}, not a {res.api_version}/{res.kind}"
        )
    causes = _check_metadata(res, obj)
    if res.crd is not None:
        unknown = res.crd.unknown_fields(obj)
        if unknown and query.get("fieldValidation") == "Strict":
            raise ApiError(
                400,
                "BadRequest",
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: strict decoding error: '
                + ", ".join(f'unknown field "{u}"' for u in unknown),
            )
        obj = res.crd.prune(obj)
        causes += res.crd.errors(obj)
        causes += res.crd.cel_errors(obj, old)
    elif res.plural in ("namespaces", "priorityclasses", "poddisruptionbudgets", "services", "persistentvolumeclaims"):
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=query.get("fieldValidation") == "Strict")
        except kubernetes_validate.ValidationError as exc:
            causes.append((".".join(map(str, exc.absolute_path)) or "body", exc.message[:300]))
    if causes:
        raise _invalid(res, name, causes)
    return obj


def _create(store: Store, res: Resource, obj: Obj, namespace: str, query: dict[str, str]) -> Obj:
    meta = obj.setdefault("metadata", {})
    if res.namespaced:
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(
                400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace
        if ("", namespace) not in store.bucket(_ns_resource(store)):
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"})
    obj = _validate(res, obj, query)
    meta = obj["metadata"]
    if res.crd is not None:
        obj.pop("status", None)  # the status subresource: status is written by controllers only
    key = (meta.get("namespace", ""), meta["name"])
    if key in store.bucket(res):
        raise ApiError(
            409,
            "AlreadyExists",
            f'{res.qualified} "{meta["name"]}" already exists',
            {"name": meta["name"], "group": res.group, "kind": res.plural},
        )
    obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
    created = store.put(res, obj, "ADDED")
    for hook in store.on_write:
        hook(res, created)
    return created


def _ns_resource(store: Store) -> Resource:
    return next(r for r in store.resources.values() if r.plural == "namespaces")


def _current(store: Store, res: Resource, namespace: str, name: str) -> Obj:
    obj = store.bucket(res).get((namespace, name))
    if obj is None:
        raise _not_found(res, name)
    return obj


def _check_version(res: Resource, current: Obj, sent: Any, name: str) -> None:
    if sent is not None and str(sent) != current["metadata"]["resourceVersion"]:
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been modified; please apply your changes to the latest version and try again',
            {"name": name, "group": res.group, "kind": res.plural},
        )


def _replace(store: Store, res: Resource, namespace: str, name: str, obj: Obj, query: dict[str, str]) -> Obj:
    current = _current(store, res, namespace, name)
    sent = (obj.get("metadata") or {}).get("resourceVersion")
    if sent is None and res.crd is not None:
        raise _invalid(res, name, [("metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")])
    _check_version(res, current, sent, name)
    obj = _validate(res, obj, query, current)
    if res.crd is not None:  # the status subresource: a replace cannot change status
        obj.pop("status", None)
        if "status" in current:
            obj["status"] = current["status"]
    return _store_update(store, res, current, obj)


def _store_update(store: Store, res: Resource, current: Obj, new: Obj) -> Obj:
    keep = {k: current["metadata"][k] for k in ("uid", "creationTimestamp", "namespace", "name") if k in current["metadata"]}
    new["metadata"].update(keep)
    generation = current["metadata"].get("generation", 1)
    new["metadata"]["generation"] = generation + (new.get("spec") != current.get("spec"))
    updated = store.put(res, new, "MODIFIED")
    for hook in store.on_write:
        hook(res, updated)
    return updated


def _patch(store: Store, res: Resource, namespace: str, name: str, body: Any, content_type: str, query: dict[str, str]) -> Obj:
    current = _current(store, res, namespace, name)
    if content_type == "application/json-patch+json":
        if not isinstance(body, list):
            raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        raise ApiError(415, "UnsupportedMediaType", "this test double does not implement JSON Patch")
    if content_type == "application/strategic-merge-patch+json" and res.crd is not None:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )
    if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")
    _check_version(res, current, ((body or {}).get("metadata") or {}).get("resourceVersion"), name)
    patched = merge_patch(copy.deepcopy(current), body)
    patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    patched = _validate(res, patched, query, current)
    return _store_update(store, res, current, patched)


def _delete(store: Store, res: Resource, namespace: str, name: str) -> Obj:
    obj = store.bucket(res).pop((namespace, name), None)
    if obj is None:
        raise _not_found(res, name)
    store.record(res, "DELETED", obj)
    if res.crd is not None:  # the garbage collector: a job's pods (and a notebook's Service) go with it
        uid = obj["metadata"].get("uid")
        for owned in (r for r in store.resources.values() if r.plural in ("pods", "services")):
            for key, child in list(store.bucket(owned).items()):
                if any(o.get("uid") == uid for o in child["metadata"].get("ownerReferences", [])):
                    store.bucket(owned).pop(key)
                    store.record(owned, "DELETED", child)
    return obj


def _evict(store: Store, namespace: str, name: str, body: Any) -> Obj:
    pods = next(r for r in store.resources.values() if r.plural == "pods")
    if not isinstance(body, dict) or body.get("kind") != "Eviction" or (body.get("metadata") or {}).get("name") != name:
        raise ApiError(400, "BadRequest", "the body must be an Eviction naming the pod")
    pod = _current(store, pods, namespace, name)
    pdbs = next(r for r in store.resources.values() if r.plural == "poddisruptionbudgets")
    for (ns, pdb_name), pdb in store.bucket(pdbs).items():
        match = label_matcher(",".join(f"{k}={v}" for k, v in pdb["spec"]["selector"].get("matchLabels", {}).items()))
        if ns != namespace or not match(pod["metadata"].get("labels", {})):
            continue
        matching = [
            p for (pns, _), p in store.bucket(pods).items() if pns == namespace and match(p["metadata"].get("labels", {}))
        ]
        healthy = sum(1 for p in matching if p.get("status", {}).get("phase") == "Running")
        need = int(pdb["spec"].get("minAvailable", 0))
        if healthy - need < 1:
            raise ApiError(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                {
                    "causes": [
                        {
                            "reason": "DisruptionBudget",
                            "message": f"The disruption budget {pdb_name} needs {need} healthy pods and has {healthy} currently",
                        }
                    ]
                },
            )
    _delete(store, pods, namespace, name)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


# --- HTTP ------------------------------------------------------------------------------------------


@dataclass
class Route:
    res: Resource
    namespace: str
    name: str
    sub: str


def _route(fake: FakeApiServer, path: str) -> Route:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    res = fake.resource(group, rest[0], version)
    if namespace and not res.namespaced:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return Route(res, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")


def _handler(fake: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    store = fake.store

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: tests read `store.requests` instead

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                raise ApiError(400, "BadRequest", "the request body is not JSON") from None

        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            store.requests.append((method, self.path))
            try:
                if url.path.rstrip("/") == "/version":
                    return self._send(200, VERSION_INFO)
                body = self._body() if method in ("POST", "PUT", "PATCH") else None
                route = _route(fake, url.path)
                if route.res.plural in store.forbidden:
                    raise self._forbidden(method, route, query)
                if method == "GET" and not route.name and query.get("watch") in ("true", "1"):
                    return self._watch(route, query)
                code, answer, ctype = self._dispatch(method, route, body, query)
                return self._send(code, answer, ctype)
            except ApiError as exc:
                return self._send(exc.code, exc.status())

        def _forbidden(self, method: str, route: Route, query: dict[str, str]) -> ApiError:
            verb = {
                "GET": "get" if route.name else ("watch" if query.get("watch") else "list"),
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }[method]
            where = f' in the namespace "{route.namespace}"' if route.namespace else " at the cluster scope"
            resource = f"{route.res.plural}/{route.sub}" if route.sub else route.res.plural
            message = f'{route.res.plural} is forbidden: User "system:serviceaccount:gpu-grid-portal:gpu-grid-portal" cannot {verb} resource "{resource}" in API group "{route.res.group}"{where}'
            return ApiError(403, "Forbidden", message, {"group": route.res.group, "kind": route.res.plural, "name": route.name})

        def _dispatch(self, method: str, route: Route, body: Any, query: dict[str, str]) -> tuple[int, Any, str]:
            res, ns, name = route.res, route.namespace, route.name
            with store.cond:
                if route.sub == "eviction" and method == "POST" and res.plural == "pods":
                    return 201, _evict(store, ns, name, body), "application/json"
                if route.sub == "log" and method == "GET" and res.plural == "pods":
                    _current(store, res, ns, name)
                    return 200, store.logs.get((ns, name), ""), "text/plain"
                if route.sub:
                    raise ApiError(404, "NotFound", f"this test double does not serve {res.plural}/{route.sub}")
                if method == "GET" and name:
                    obj = copy.deepcopy(_current(store, res, ns, name))
                    self._maybe_interfere(res, ns, name)
                    return 200, obj, "application/json"
                if method == "GET":
                    return 200, self._list(res, ns, query), "application/json"
                if method == "POST" and not name:
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "the request body must be an object")
                    return 201, copy.deepcopy(_create(store, res, body, ns, query)), "application/json"
                if method == "PUT" and name:
                    return 200, copy.deepcopy(_replace(store, res, ns, name, body or {}, query)), "application/json"
                if method == "PATCH" and name:
                    ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                    return 200, copy.deepcopy(_patch(store, res, ns, name, body, ctype, query)), "application/json"
                if method == "DELETE" and name:
                    return 200, copy.deepcopy(_delete(store, res, ns, name)), "application/json"
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

        def _maybe_interfere(self, res: Resource, ns: str, name: str) -> None:
            key = (res.plural, ns, name)
            if store.interfering.get(key, 0) > 0:
                store.interfering[key] -= 1
                obj = store.bucket(res)[(ns, name)]
                obj["metadata"].setdefault("annotations", {})["fake/other-writer"] = str(store.last_rv)
                store.record(res, "MODIFIED", obj)

        def _selected(self, res: Resource, ns: str, query: dict[str, str]) -> Callable[[Obj], bool]:
            labels = label_matcher(query.get("labelSelector", ""))
            fields = field_matcher(query.get("fieldSelector", ""), res)
            return lambda o: (
                (not ns or o["metadata"].get("namespace") == ns) and labels(o["metadata"].get("labels") or {}) and fields(o)
            )

        def _list(self, res: Resource, ns: str, query: dict[str, str]) -> Obj:
            selected = self._selected(res, ns, query)
            items = [copy.deepcopy(o) for _, o in sorted(store.bucket(res).items()) if selected(o)]
            return {
                "apiVersion": res.api_version,
                "kind": f"{res.kind}List",
                "metadata": {"resourceVersion": str(store.last_rv)},
                "items": items,
            }

        def _watch(self, route: Route, query: dict[str, str]) -> None:
            res, selected = route.res, self._selected(route.res, route.namespace, query)
            deadline = time.monotonic() + float(query.get("timeoutSeconds", "30"))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")  # as the API server streams: one chunk per event
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may hang up first (Watch.stop)
                self._stream(res, selected, deadline, query)
                self.wfile.write(b"0\r\n\r\n")

        def _stream(self, res: Resource, selected: Callable[[Obj], bool], deadline: float, query: dict[str, str]) -> None:
            with store.cond:
                since = int(query.get("resourceVersion") or 0)
                pending = []
                if since == 0:  # no resourceVersion: the current state first, as synthetic ADDED events
                    pending = [("ADDED", copy.deepcopy(o)) for _, o in sorted(store.bucket(res).items()) if selected(o)]
                    since = store.last_rv
            for kind, obj in pending:
                self._event(kind, obj)
            while time.monotonic() < deadline:
                with store.cond:
                    new = [(rv, k, o) for rv, g, p, k, o in store.events if rv > since and (g, p) == (res.group, res.plural)]
                    if not new:
                        if store.stopping:
                            return
                        store.cond.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                        continue
                for rv, kind, obj in new:
                    since = rv
                    if selected(obj):
                        self._event(kind, obj)

        def _event(self, kind: str, obj: Obj) -> None:
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

    return Handler
