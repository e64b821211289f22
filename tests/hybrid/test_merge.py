"""The pure parts of `CLUSTER_BACKEND=slurm+kubernetes`: which engine runs a job, ids that name it,
and one node out of the two engines' views of it."""

from __future__ import annotations

import pytest

from cluster.backends.base import BackendRejected, JobRequest, RemoteNode
from cluster.backends.hybrid import KUBERNETES, SLURM, engine_for, merge_nodes, split_id
from cluster.states import NodeState


def request(**changes: object) -> JobRequest:
    fields: dict[str, object] = dict(
        portal_job_id=1, name="j", kind="training", team="vision", user="alice", gpu_model="a100", gpus_per_node=1,
        nodes=1, node_names=("gpu-a100-1",), walltime_s=600, image="", command=("python", "train.py"),
    )  # fmt: skip
    return JobRequest(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_container_without_a_script_goes_to_kubernetes_and_the_rest_to_slurm() -> None:
    assert engine_for(request(image="pytorch:24")) == KUBERNETES
    assert engine_for(request()) == SLURM
    assert engine_for(request(image="pytorch:24", script="#!/bin/bash\nsrun python train.py\n")) == SLURM


@pytest.mark.parametrize("bad", ["4711", "slurm:", "lsf:12", ":12", ""])
def test_an_id_that_names_no_engine_is_refused(bad: str) -> None:
    with pytest.raises(BackendRejected, match="names no engine"):
        split_id(bad)


def test_ids_keep_the_engines_own_id_whole() -> None:
    assert split_id("kubernetes:volcano/team-vision/gp-12") == (KUBERNETES, "volcano/team-vision/gp-12")
    assert split_id("slurm:4711") == (SLURM, "4711")


def node(name: str, used: int, state: str = NodeState.READY, reason: str = "", gpus: int = 8, pool: str = "a100") -> RemoteNode:
    return RemoteNode(name, pool, "onprem", "a100", gpus, used, state, reason)


def test_a_node_both_engines_list_is_one_node_with_the_use_of_both() -> None:
    merged = merge_nodes(
        [node("gpu-1", 3), node("gpu-2", 0, NodeState.DRAINING, "swap a fan")],
        [node("gpu-1", 2, pool="k8s-a100"), node("gpu-2", 1), node("k8s-only", 4, pool="k8s-a100")],
    )
    by_name = {n.name: n for n in merged}
    assert [n.name for n in merged] == ["gpu-1", "gpu-2", "k8s-only"]
    assert (by_name["gpu-1"].gpus, by_name["gpu-1"].gpus_used, by_name["gpu-1"].pool) == (8, 5, "a100")
    assert by_name["gpu-2"].state == NodeState.DRAINING and by_name["gpu-2"].reason == "slurm: swap a fan"
    assert by_name["k8s-only"].pool == "k8s-a100"


def test_the_worse_state_wins_and_a_disagreement_is_named() -> None:
    [merged] = merge_nodes([node("gpu-1", 0, gpus=8)], [node("gpu-1", 0, NodeState.DOWN, "kubelet stopped", gpus=4)])
    assert merged.state == NodeState.DOWN and merged.gpus == 4
    assert "kubernetes: kubelet stopped" in merged.reason and "Slurm 8× a100, Kubernetes 4× a100" in merged.reason
