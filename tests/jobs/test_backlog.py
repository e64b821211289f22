"""The admission cycle's backlog for a backend that queues jobs itself (Slurm): what it admits beyond
the free GPUs, within quotas, the bound, and never anything the backend could use to preempt.

The simulated grid stands in for the backend (2 a100 nodes x 8 GPUs); Slurm's own tests are in
tests/slurm/test_backlog.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django import Settings

from cluster.backends.slurm.config import SlurmConfig
from cluster.simulator.backend import SimulatorBackend
from jobs import services
from jobs.models import Job
from jobs.states import HOLDS_GPUS, JobState
from portal.models import Team, User
from quotas.models import TeamQuota


class Queuing(SimulatorBackend):
    """The simulated grid, as a backend that holds `gpus` of admitted jobs queued."""

    def __init__(self, grid: SimulatorBackend, gpus: int) -> None:
        self.__dict__.update(grid.__dict__)
        self.gpus = gpus

    def backlog_gpus(self) -> int:
        return self.gpus


def fill_a100(carol: User, submit: Callable[..., Job], priority: str = "standard") -> list[Job]:
    """render's two 8-GPU jobs hold every a100 GPU."""
    TeamQuota.objects.create(team=Team.objects.get(slug="render"), gpu_model="a100", guarantee=16, limit=16)
    fill = [submit(carol, gpus_per_node=8, priority=priority) for _ in range(2)]
    assert services.run_admission_cycle() == [j.pk for j in fill]
    return fill


def held(team: str) -> int:
    return sum(Job.objects.filter(team__slug=team, gpu_model="a100", state__in=HOLDS_GPUS).values_list("gpus", flat=True))


def test_without_a_backlog_nothing_is_admitted_beyond_the_free_gpus(
    grid: SimulatorBackend, alice: User, carol: User, submit: Callable[..., Job]
) -> None:
    fill_a100(carol, submit)
    submit(alice)
    assert services.run_admission_cycle(grid) == []


def test_the_backlog_counts_against_the_quota_and_keeps_the_policys_order(
    grid: SimulatorBackend, alice: User, carol: User, submit: Callable[..., Job]
) -> None:
    fill_a100(carol, submit)
    mine = [submit(alice) for _ in range(14)]  # vision's a100 limit is 12
    admitted = services.run_admission_cycle(Queuing(grid, 64))
    assert admitted == [j.pk for j in mine[:12]]
    assert held("vision") == 12 and held("render") == 16
    waiting = Job.objects.get(pk=mine[12].pk)
    assert waiting.state == JobState.PENDING and waiting.reason == "quota" and "limit" in waiting.reason_detail
    assert services.run_admission_cycle(Queuing(grid, 64)) == []


def test_the_backlog_is_bounded(grid: SimulatorBackend, alice: User, carol: User, submit: Callable[..., Job]) -> None:
    fill_a100(carol, submit)
    mine = [submit(alice) for _ in range(6)]
    assert services.run_admission_cycle(Queuing(grid, 3)) == [j.pk for j in mine[:3]]
    assert services.run_admission_cycle(Queuing(grid, 3)) == []  # the three still queued fill it
    assert services.run_admission_cycle(Queuing(grid, 5)) == [j.pk for j in mine[3:5]]


def test_nothing_is_queued_that_the_backend_could_preempt_with(
    grid: SimulatorBackend, alice: User, carol: User, submit: Callable[..., Job]
) -> None:
    fill_a100(carol, submit, priority="preemptible")
    standard = submit(alice)
    preemptible = submit(alice, priority="preemptible")
    # A standard job queued in Slurm would preempt render's jobs there (its QOS may preempt
    # preemptible ones): only the preemptible job may wait in the backlog.
    assert services.run_admission_cycle(Queuing(grid, 64)) == [preemptible.pk]
    assert Job.objects.get(pk=standard.pk).state == JobState.PENDING


def test_nothing_is_queued_that_could_preempt_a_job_admitted_in_the_same_cycle(
    grid: SimulatorBackend, alice: User, carol: User, render: Team, submit: Callable[..., Job]
) -> None:
    TeamQuota.objects.create(team=render, gpu_model="a100", guarantee=16, limit=16)
    fill = [submit(carol, gpus_per_node=8), submit(carol, gpus_per_node=7)]
    assert services.run_admission_cycle() == [j.pk for j in fill]  # one a100 GPU left
    standard = submit(alice, gpus_per_node=8)
    preemptible = submit(alice, priority="preemptible")
    # The preemptible job takes the free GPU; the standard one, queued, could preempt it in Slurm.
    assert services.run_admission_cycle(Queuing(grid, 64)) == [preemptible.pk]
    assert Job.objects.get(pk=standard.pk).state == JobState.PENDING


def test_a_borrowing_job_is_not_queued_while_a_job_within_its_teams_guarantee_waits(
    grid: SimulatorBackend, alice: User, carol: User, render: Team, vision: Team, submit: Callable[..., Job]
) -> None:
    fill_a100(carol, submit)
    TeamQuota.objects.filter(team=render).update(limit=24)
    TeamQuota.objects.filter(team=vision, gpu_model="a100").update(guarantee=8)
    borrowing = submit(carol, gpus_per_node=8)  # standard: the policy considers it first
    within = submit(alice, gpus_per_node=8, priority="preemptible")  # within vision's guarantee
    # Room for one: render's borrowing job would take the GPUs vision is guaranteed; neither is queued.
    assert services.run_admission_cycle(Queuing(grid, 8)) == []
    assert services.run_admission_cycle(Queuing(grid, 16)) == [borrowing.pk, within.pk]


@pytest.mark.parametrize("value", [-1, 4097, "many"])
def test_the_backlog_setting_is_bounded(settings: Settings, value: object) -> None:
    settings.SLURM_BACKLOG = value
    with pytest.raises(ImproperlyConfigured, match="SLURM_BACKLOG"):
        SlurmConfig.from_settings()


def test_the_backlog_setting_defaults_to_64_gpus(settings: Settings) -> None:
    assert SlurmConfig.from_settings().backlog_gpus == 64
    settings.SLURM_BACKLOG = 0
    assert SlurmConfig.from_settings().backlog_gpus == 0
