"""What validation reads of the grid is kept for seconds per process, and a change this process makes
(a node, a pool, a priority class, a burst policy) is seen by the very next submit."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_django import Settings

from cluster.models import Node, Pool
from jobs import services as job_services
from jobs.spec import SpecError
from portal.models import User
from quotas.models import PriorityClass

BODY = {"name": "ctx", "command": ["true"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}


def test_a_node_of_a_new_model_is_valid_at_once(grid: Any, alice: User) -> None:
    with pytest.raises(SpecError) as caught:
        job_services.submit(alice, {**BODY, "gpu_model": "l4"})
    assert "gpu_model" in caught.value.errors
    pool = Pool.objects.create(name="new-l4", gpu_model="l4")
    Node.objects.create(name="l4-1", pool=pool, gpu_model="l4", gpus=8)
    assert job_services.submit(alice, {**BODY, "gpu_model": "l4", "gpus_per_node": 8})


def test_a_larger_node_raises_the_per_node_limit_at_once(grid: Any, alice: User) -> None:
    biggest = max(Node.objects.filter(gpu_model="a100").values_list("gpus", flat=True))
    with pytest.raises(SpecError):
        job_services.submit(alice, {**BODY, "gpus_per_node": biggest + 8})
    node = Node.objects.filter(gpu_model="a100").first()
    assert node is not None
    node.gpus = biggest + 8
    node.save()
    assert job_services.submit(alice, {**BODY, "gpus_per_node": biggest + 8})


def test_a_new_priority_class_is_valid_at_once(grid: Any, alice: User) -> None:
    job_services.submit(alice, dict(BODY))  # the shape is now held in memory
    with pytest.raises(SpecError) as caught:
        job_services.submit(alice, {**BODY, "priority": "urgent-review"})
    assert "priority" in caught.value.errors
    PriorityClass.objects.create(name="urgent-review", rank=5)
    assert job_services.submit(alice, {**BODY, "priority": "urgent-review"})


def test_a_change_without_signals_is_seen_after_the_time_to_live(settings: Settings, grid: Any, alice: User) -> None:
    job_services.submit(alice, dict(BODY))
    Node.objects.filter(gpu_model="a100").update(gpu_model="h100")  # a bulk update sends no signal
    assert job_services.submit(alice, dict(BODY))  # answered from memory, as another process's change is
    settings.SUBMIT_GRID_CACHE_S = 0
    with pytest.raises(SpecError) as caught:
        job_services.submit(alice, dict(BODY))
    assert "gpu_model" in caught.value.errors
