"""Which cloud provider bursts go to, for the configured cluster backend."""

from __future__ import annotations

from django.conf import settings

from bursting.provider import CloudProvider, SimulatedCloud
from cluster.backends.base import BackendUnavailable


def get_provider() -> CloudProvider:
    """The provider for the configured cluster backend."""
    if settings.CLUSTER_BACKEND == "simulator":
        return SimulatedCloud()
    if settings.CLUSTER_BACKEND in ("kubernetes", "slurm+kubernetes"):
        # Imported here: the Kubernetes backend is only loaded where it is configured.
        from bursting.cluster_api import ClusterApiCloud

        return ClusterApiCloud()
    if settings.CLUSTER_BACKEND == "slurm":
        from bursting.slurm_power import SlurmPowerSave

        return SlurmPowerSave()
    raise BackendUnavailable(f"bursting on CLUSTER_BACKEND={settings.CLUSTER_BACKEND!r} is not wired")
