"""The GPU models the grid knows: what a job may ask for and what telemetry reports.

A shared GPU is a model of its own, as Kubernetes, Slurm and Kueue see it: a MIG slice
(`a100-1g.10gb`: one of seven compute slices and 10 GB of an A100, its own device, resource
`nvidia.com/mig-1g.10gb`) or a time-sliced GPU (`l4-shared`: one of four replicas the device plugin
advertises of each L4, resource `nvidia.com/gpu.shared`). A node of a shared pool has so many slices,
quotas count them, and rate cards price them (a card per shared model; without one, unpriced). A job
asks for one with `gpu_model` and `gpu_fraction` (`shared_model_for`), or names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

MIG = "mig"
TIMESLICE = "timeslice"


@dataclass(frozen=True)
class GpuModel:
    """A GPU model: the short name users type and the facts telemetry needs."""

    key: str
    # As dcgm-exporter's modelName and Kubernetes' nvidia.com/gpu.product say it: a MIG slice's is the
    # physical GPU's; GPU Feature Discovery adds "-SHARED" to a time-sliced one's (renameByDefault).
    product: str
    memory_mib: int
    tdp_w: float
    idle_w: float
    shares: str = ""  # the whole GPU's model when this is a share of one ("" for a whole GPU)
    fraction: Fraction = Fraction(1)  # of the whole GPU's compute
    sharing: str = ""  # MIG or TIMESLICE
    profile: str = ""  # the MIG profile ("1g.10gb")

    @property
    def whole(self) -> str:
        """The model of the physical GPU."""
        return self.shares or self.key

    @property
    def k8s_resource(self) -> str:
        """The extended resource NVIDIA's device plugin advertises for one of these."""
        if self.sharing == MIG:
            return f"nvidia.com/mig-{self.profile}"  # the plugin's "mixed" MIG strategy
        if self.sharing == TIMESLICE:
            return "nvidia.com/gpu.shared"  # time-slicing with renameByDefault
        return "nvidia.com/gpu"

    @property
    def slurm_gres(self) -> str:
        """The gres a Slurm job asks for (`<gres>:<count>`): shards for time-slicing, typed GPUs otherwise."""
        return "shard" if self.sharing == TIMESLICE else f"gpu:{self.key}"


def _mig(whole: GpuModel, profile: str, sevenths: int, memory_gb: int) -> GpuModel:
    part = Fraction(sevenths, 7)
    return GpuModel(
        f"{whole.key}-{profile}", whole.product, memory_gb * 1024,
        float(whole.tdp_w * part), float(whole.idle_w * part), whole.key, part, MIG, profile,
    )  # fmt: skip


def _timesliced(whole: GpuModel, replicas: int) -> GpuModel:
    part = Fraction(1, replicas)
    return GpuModel(
        f"{whole.key}-shared", f"{whole.product}-SHARED", whole.memory_mib,
        float(whole.tdp_w * part), float(whole.idle_w * part), whole.key, part, TIMESLICE,
    )  # fmt: skip


_A100 = GpuModel("a100", "NVIDIA A100-SXM4-80GB", 81920, 400.0, 55.0)
_H100 = GpuModel("h100", "NVIDIA H100 80GB HBM3", 81559, 700.0, 70.0)
_A10G = GpuModel("a10g", "NVIDIA A10G", 23028, 300.0, 25.0)
_L4 = GpuModel("l4", "NVIDIA L4", 23034, 72.0, 16.0)
TIMESLICE_REPLICAS = 4  # the device plugin's `replicas` in the time-slicing config the docs ship

GPU_MODELS: dict[str, GpuModel] = {
    m.key: m
    for m in (
        _A100,
        _H100,
        _A10G,
        _L4,
        GpuModel("v100", "Tesla V100-SXM2-32GB", 32768, 300.0, 40.0),
        *(_mig(whole, f"{n}g.{gb}gb", n, gb) for whole in (_A100, _H100) for n, gb in ((1, 10), (2, 20), (3, 40))),
        *(_timesliced(whole, TIMESLICE_REPLICAS) for whole in (_A10G, _L4)),
    )
}


def slurm_gres(key: str) -> str:
    """The gres a Slurm job of this model asks for, before `:<count>`."""
    model = GPU_MODELS.get(key)
    return model.slurm_gres if model else f"gpu:{key}"


def slurm_tres(key: str) -> str:
    """The TRES a Slurm association limits for this model (GrpTRES)."""
    return f"gres/{slurm_gres(key)}"


def shared_model_for(whole: str, fraction: Fraction, available: frozenset[str] | set[str]) -> GpuModel | None:
    """The smallest share of a `whole` GPU among `available` models that gives at least `fraction` of it."""
    fits = [m for m in GPU_MODELS.values() if m.shares == whole and m.key in available and m.fraction >= fraction]
    return min(fits, key=lambda m: (m.fraction, m.memory_mib, m.key), default=None)


def shares_of(whole: str) -> list[GpuModel]:
    """The shared models of one whole GPU, smallest first."""
    return sorted((m for m in GPU_MODELS.values() if m.shares == whole), key=lambda m: (m.fraction, m.key))


def gpu_model(key: str) -> GpuModel:
    try:
        return GPU_MODELS[key]
    except KeyError:
        raise KeyError(f"unknown GPU model {key!r}; known: {', '.join(sorted(GPU_MODELS))}") from None
