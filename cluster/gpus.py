"""The GPU models the grid knows: what a job may ask for and what telemetry reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    """A GPU model: the short name users type and the facts telemetry needs."""

    key: str
    product: str  # as dcgm-exporter's modelName and Kubernetes' nvidia.com/gpu.product say it
    memory_mib: int
    tdp_w: float
    idle_w: float


GPU_MODELS: dict[str, GpuModel] = {
    m.key: m
    for m in (
        GpuModel("a100", "NVIDIA A100-SXM4-80GB", 81920, 400.0, 55.0),
        GpuModel("h100", "NVIDIA H100 80GB HBM3", 81559, 700.0, 70.0),
        GpuModel("a10g", "NVIDIA A10G", 23028, 300.0, 25.0),
        GpuModel("l4", "NVIDIA L4", 23034, 72.0, 16.0),
        GpuModel("v100", "Tesla V100-SXM2-32GB", 32768, 300.0, 40.0),
    )
}


def gpu_model(key: str) -> GpuModel:
    try:
        return GPU_MODELS[key]
    except KeyError:
        raise KeyError(f"unknown GPU model {key!r}; known: {', '.join(sorted(GPU_MODELS))}") from None
