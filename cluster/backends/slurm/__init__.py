"""The Slurm backend: slurmrestd for jobs and nodes, scontrol/scancel where 22.05's REST cannot."""

from cluster.backends.slurm.backend import SlurmBackend

__all__ = ["SlurmBackend"]
