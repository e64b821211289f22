"""The host of a series where the exporter names itself (cluster/telemetry/hosts.py), on answers shaped
as Prometheus gives them, with the node list and the backend's answers counted."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from cluster.telemetry import hosts
from cluster.telemetry.hosts import HostResolver
from cluster.telemetry.names import MetricNames, parse_names


class World:
    def __init__(self) -> None:
        self.nodes = {"gpu-1", "gpu-2"}
        self.pods = {"nvidia-dcgm-exporter-xpn6b": "gpu-2"}
        self.now = 1000.0
        self.node_reads = 0
        self.asked: list[list[str]] = []

    def known(self) -> set[str]:
        self.node_reads += 1
        return set(self.nodes)

    def exporters(self, names: Collection[str]) -> dict[str, str]:
        self.asked.append(sorted(names))
        return {n: self.pods[n] for n in names if n in self.pods}

    def resolver(self, names: MetricNames | None = None) -> HostResolver:
        return HostResolver(names or MetricNames(), self.known, self.exporters, clock=lambda: self.now)


def row(**labels: str) -> dict[str, Any]:
    return {"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", "gpu": "0", **labels}, "value": [0, "1"]}


def test_series_of_known_nodes_pass_as_they_are_and_the_backend_is_not_asked() -> None:
    world = World()
    resolver = world.resolver()
    rows = [row(Hostname="gpu-1"), row(node="gpu-2", Hostname="nvidia-dcgm-exporter-abcde"), {"metric": {}, "value": [0, "1"]}]
    assert resolver.resolve(rows) == rows
    assert world.asked == [] and resolver.take_unresolved() == {}


def test_an_exporter_pod_name_becomes_its_node_and_an_unknown_one_is_left_out_and_counted() -> None:
    world = World()
    resolver = world.resolver()
    answer = resolver.resolve([row(Hostname="nvidia-dcgm-exporter-xpn6b"), row(Hostname="nvidia-dcgm-exporter-gone1")] * 2)
    assert [r["metric"]["node"] for r in answer] == ["gpu-2", "gpu-2"]
    assert all(r["metric"]["Hostname"] == "nvidia-dcgm-exporter-xpn6b" for r in answer)  # the rest is kept
    assert MetricNames().host(answer[0]["metric"]) == "gpu-2"
    assert resolver.left_out() == resolver.left_out() == {"nvidia-dcgm-exporter-gone1": 2}  # a look takes nothing
    assert resolver.take_unresolved() == {"nvidia-dcgm-exporter-gone1": 2}
    assert resolver.take_unresolved() == {} == resolver.left_out()  # taken: counted again from nothing
    assert resolver.aliases(["gpu-2"]) == ["nvidia-dcgm-exporter-xpn6b"] and resolver.aliases(["gpu-1"]) == []


def test_the_backend_is_asked_once_per_name_and_a_miss_again_only_after_a_while() -> None:
    world = World()
    resolver = world.resolver()
    for _ in range(5):
        resolver.resolve([row(Hostname="nvidia-dcgm-exporter-xpn6b"), row(Hostname="nvidia-dcgm-exporter-gone1")])
    assert world.asked == [["nvidia-dcgm-exporter-gone1", "nvidia-dcgm-exporter-xpn6b"]]
    world.pods["nvidia-dcgm-exporter-gone1"] = "gpu-1"  # it was only slow to appear
    world.now += hosts.EXPORTER_RETRY_S + 1
    answer = resolver.resolve([row(Hostname="nvidia-dcgm-exporter-gone1")])
    assert world.asked[-1] == ["nvidia-dcgm-exporter-gone1"] and answer[0]["metric"]["node"] == "gpu-1"
    world.now += hosts.EXPORTER_TTL_S + 1
    del world.pods["nvidia-dcgm-exporter-xpn6b"]  # the pod is gone: its last samples still go to its node
    assert resolver.resolve([row(Hostname="nvidia-dcgm-exporter-xpn6b")])[0]["metric"]["node"] == "gpu-2"


def test_a_new_node_is_recognised_without_waiting_for_the_node_list_to_expire() -> None:
    world = World()
    resolver = world.resolver()
    resolver.resolve([row(Hostname="gpu-1")])
    world.nodes.add("gpu-3")
    world.now += hosts.KNOWN_RETRY_S + 0.1
    assert resolver.resolve([row(Hostname="gpu-3")])[0]["metric"] == {
        "__name__": "DCGM_FI_DEV_GPU_TEMP",
        "gpu": "0",
        "Hostname": "gpu-3",
    }
    assert resolver.take_unresolved() == {}
    reads = world.node_reads
    for _ in range(10):  # a name that stays unknown re-reads the node list at most every KNOWN_RETRY_S
        resolver.resolve([row(Hostname="phantom")])
    assert world.node_reads == reads and resolver.take_unresolved() == {"phantom": 10}
    world.now += hosts.KNOWN_RETRY_S + 0.1
    for _ in range(10):
        resolver.resolve([row(Hostname="phantom")])
    assert world.node_reads == reads + 1 and resolver.take_unresolved() == {"phantom": 10}


@pytest.mark.parametrize("labels", ["hostname", "Hostname|hostname"])
def test_the_resolved_node_goes_where_the_sites_host_labels_look_first(labels: str) -> None:
    world = World()
    names = parse_names(f"host_labels={labels}")
    resolver = world.resolver(names)
    first = names.host_labels[0]
    [answer] = resolver.resolve([row(**{first: "nvidia-dcgm-exporter-xpn6b"})])
    assert names.host(answer["metric"]) == "gpu-2"
