"""Slurm (the local dev cluster) and Kubernetes (the fake API server) on the same nodes."""

from __future__ import annotations

from tests.k8s.conftest import fake, portal_on_fake  # noqa: F401 - fixtures for this directory
from tests.slurm.conftest import slurm, slurm_cluster, slurm_world  # noqa: F401 - fixtures for this directory
