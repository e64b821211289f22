"""The portal's own footprint in a Kubernetes cluster: team namespaces and the RBAC its service account needs (pure)."""

from __future__ import annotations

from cluster.backends.kubernetes.manifests import (
    DOMAIN,
    MACHINE_DEPLOYMENT_API,
    MANAGED_BY,
    PYTORCH_JOB_API,
    QUEUE_API,
    VOLCANO_JOB_API,
    Manifest,
    ManifestConfig,
    namespace_for,
)


def team_namespace(team: str, config: ManifestConfig) -> Manifest:
    """The team's namespace, labelled so the portal's RBAC and tooling can find it."""
    labels = {**MANAGED_BY, f"{DOMAIN}/team": team}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace_for(team, config), "labels": labels}}


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Manifest:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


def portal_rules() -> list[Manifest]:
    """Exactly what the backend calls, and nothing more.

    Queues and PriorityClasses are only read: they reach the cluster through GitOps (the
    export), applied with the GitOps tool's own credentials.
    """
    read = ["get", "list", "watch"]
    jobs = [*read, "create", "delete"]
    return [
        _rule([""], ["nodes"], [*read, "patch"]),
        _rule([""], ["pods"], read),
        _rule([""], ["pods/log"], ["get"]),
        _rule([""], ["pods/eviction"], ["create"]),
        # A notebook's ClusterIP Service in its team's namespace, made when it runs, deleted when it ends.
        _rule([""], ["services"], ["create", "delete"]),
        _rule(["scheduling.k8s.io"], ["priorityclasses"], read),
        _rule([VOLCANO_JOB_API[0]], [VOLCANO_JOB_API[2]], jobs),
        _rule([PYTORCH_JOB_API[0]], [PYTORCH_JOB_API[2]], jobs),
        _rule([QUEUE_API[0]], [QUEUE_API[2]], read),
        _rule([MACHINE_DEPLOYMENT_API[0]], [MACHINE_DEPLOYMENT_API[2]], [*read, "update"]),
        # Releasing one idle burst node: annotate its Machine with cluster.x-k8s.io/delete-machine.
        _rule([MACHINE_DEPLOYMENT_API[0]], ["machines"], [*read, "patch"]),
    ]


def rbac(namespace: str, service_account: str) -> list[Manifest]:
    """ServiceAccount, ClusterRole and ClusterRoleBinding for the portal.

    Cluster-wide because the portal reads nodes, writes Queues and PriorityClasses (both
    cluster-scoped) and submits into every team namespace.
    """
    name = "gpu-grid-portal"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace, "labels": MANAGED_BY},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": MANAGED_BY},
            "rules": portal_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": MANAGED_BY},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]
