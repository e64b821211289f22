"""The backend registry: settings.CLUSTER_BACKEND names one of these."""

from __future__ import annotations

from django.conf import settings

from cluster.backends.base import BackendError, BackendRejected, BackendUnavailable, ClusterBackend
from cluster.backends.hybrid import HybridBackend
from cluster.backends.kubernetes.backend import KubernetesBackend
from cluster.backends.slurm import SlurmBackend
from cluster.simulator.backend import SimulatorBackend

BACKENDS: dict[str, type[ClusterBackend]] = {
    "simulator": SimulatorBackend,
    "kubernetes": KubernetesBackend,
    "slurm": SlurmBackend,
    "slurm+kubernetes": HybridBackend,  # the same nodes in both (cluster/backends/hybrid.py)
}


def get_backend(name: str | None = None) -> ClusterBackend:
    chosen = name or settings.CLUSTER_BACKEND
    backend_class = BACKENDS.get(chosen)
    if backend_class is None:
        raise BackendUnavailable(
            f"CLUSTER_BACKEND={chosen!r} is not available in this build; available: {', '.join(sorted(BACKENDS))}"
        )
    return backend_class()


__all__ = ["BACKENDS", "BackendError", "BackendRejected", "BackendUnavailable", "ClusterBackend", "get_backend"]
