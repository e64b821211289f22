"""The allocation record's claim on GPUs whose exporter names no job (grid.telemetry.attribution)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from cluster.models import Node
from cluster.simulator.backend import SimulatorBackend
from cluster.telemetry.convert import attribute
from cluster.telemetry.names import MetricNames
from grid.telemetry import HeldJob, attribution

pytestmark = pytest.mark.django_db
NAMES = MetricNames()


def held(job_id: int, placement: dict[str, int], started_ago_s: float = 600) -> HeldJob:
    started = timezone.now() - timedelta(seconds=started_ago_s)
    return HeldJob(job_id, "running", "vision", 1, placement, sum(placement.values()), "onprem", "", started)


def test_a_job_holding_a_whole_unlabelled_node_is_credited_with_its_gpus(grid: SimulatorBackend) -> None:
    node = Node.objects.filter(gpus__gt=1).first()
    assert node is not None
    how = attribution([held(7, {node.name: node.gpus})])
    assert attribute({}, node.name, 0, NAMES, how) == 7
    assert attribute({}, node.name, -1, NAMES, how) == 7  # a per-node summary


def test_a_job_holding_part_of_an_unlabelled_node_is_credited_with_none_of_it(grid: SimulatorBackend) -> None:
    # The record says how many GPUs the job holds there, not which: the node's free GPUs would count as its.
    node = Node.objects.filter(gpus__gt=1).first()
    assert node is not None
    how = attribution([held(7, {node.name: 1})])
    assert [attribute({}, node.name, gpu, NAMES, how) for gpu in (-1, 0, 1)] == [None, None, None]
    assert attribute({"hpc_job": "7"}, node.name, 0, NAMES, how) == 7  # its label still names it


def test_a_node_shared_by_two_jobs_is_claimed_by_neither(grid: SimulatorBackend) -> None:
    node = Node.objects.filter(gpus__gt=1).first()
    assert node is not None
    half = node.gpus // 2
    how = attribution([held(7, {node.name: half}), held(8, {node.name: node.gpus - half})])
    assert attribute({}, node.name, -1, NAMES, how) is None


def test_sums_over_a_window_are_claimed_only_by_jobs_running_when_it_opened(grid: SimulatorBackend) -> None:
    node = Node.objects.filter(gpus__gt=1).first()
    assert node is not None
    job = held(7, {node.name: node.gpus}, started_ago_s=30)
    opened = timezone.now() - timedelta(seconds=60)
    assert attribute({}, node.name, -1, NAMES, attribution([job], started_by=opened)) is None
    assert attribute({}, node.name, -1, NAMES, attribution([job], started_by=timezone.now())) == 7
    pending = HeldJob(9, "starting", "vision", 1, {node.name: node.gpus}, node.gpus, "onprem", "", None)
    assert attribute({}, node.name, -1, NAMES, attribution([pending], started_by=opened)) is None


def test_the_node_sizes_are_read_only_when_an_unlabelled_node_is_met(
    grid: SimulatorBackend, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    node = Node.objects.filter(gpus__gt=1).first()
    assert node is not None
    how = attribution([held(7, {node.name: node.gpus})])
    with django_assert_num_queries(0):
        assert attribute({"hpc_job": "7"}, node.name, 0, NAMES, how, {node.name}) == 7
        assert attribute({}, "elsewhere", 0, NAMES, how) is None
