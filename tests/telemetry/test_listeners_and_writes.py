"""At grid scale the cycle sends only to groups somebody listens to, writes only the rows that change,
and stale data still decides nothing."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.utils import timezone
from pytest_django import Settings

from cluster import guard
from cluster.models import GuardState, JobEfficiency, Node
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import GpuSample
from cluster.simulator.telemetry import SimulatorTelemetry
from cluster.states import NodeState
from cluster.telemetry.summaries import view_of_samples
from grid import telemetry
from jobs.models import Job
from portal import listeners
from portal.models import User
from tests.telemetry.test_cycle import guard_settings, node_of, running

guard_settings = guard_settings  # the cycle tests' settings, shared rather than copied


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


class Without:
    """The simulator's samples less those of some nodes: what Prometheus answers when their series are stale."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = set(hosts)

    def samples(self, hosts: list[str] | None = None, at: datetime | None = None) -> list[GpuSample]:
        return [s for s in SimulatorTelemetry().samples(hosts, at) if s.hostname not in self.hosts]

    def history(self, hosts: list[str], start: datetime, end: datetime, step_s: float) -> list[tuple[datetime, list[GpuSample]]]:
        return []


# --- the listener registry ------------------------------------------------------------------------


def test_a_group_is_listened_while_an_entry_for_it_lives() -> None:
    listeners.join("web-1", ["grid", "job.7"], now=1000.0)
    assert listeners.listened(["grid", "job.7", "job.8"], now=1001.0) == {"grid", "job.7"}
    assert listeners.listened(["grid"], now=1000.0 + listeners.TTL_S + 1) == set()  # a process that died drops out


def test_a_group_stays_listened_until_its_last_listener_leaves() -> None:
    listeners.join("web-1", ["job.7"], now=1000.0)
    listeners.join("web-2", ["job.7"], now=1000.0)
    listeners.leave("web-1", ["job.7"], now=1001.0)
    assert listeners.listened(["job.7"], now=1002.0) == {"job.7"}
    listeners.leave("web-2", ["job.7"], now=1003.0)
    assert listeners.listened(["job.7"], now=1004.0) == set()


def test_the_fan_out_sends_nothing_to_a_group_without_a_listener() -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("job.1", channel)  # in the layer's group, but never announced
    async_to_sync(layer.group_add)("job.2", channel)
    listeners.join("web-1", ["job.2"])
    messages = [(f"job.{i}", {"type": "telemetry.job", "job": i}) for i in (1, 2)]
    assert telemetry.fan_out(messages, listeners.listened(g for g, _ in messages)) == 1
    assert async_to_sync(layer.receive)(channel) == {"type": "telemetry.job", "job": 2}


def test_the_cycle_builds_messages_only_for_the_groups_listened_to(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job]
) -> None:
    job = running(submit(alice))
    samples = telemetry.source_for(telemetry.held_jobs()).samples()
    by_job = telemetry.samples_by_job(samples, {job.pk})
    messages, heard = telemetry.live_messages_for_listeners(samples, by_job, telemetry.held_jobs(), timezone.now())
    assert messages == [] and heard == set()
    listeners.join("web-1", ["grid", f"job.{job.pk}"])
    messages, heard = telemetry.live_messages_for_listeners(samples, by_job, telemetry.held_jobs(), timezone.now())
    assert [g for g, _ in messages] == ["grid", f"job.{job.pk}"] and heard == {"grid", f"job.{job.pk}"}


def test_a_cycle_reports_the_groups_it_sent_to(grid: SimulatorBackend, alice: User, submit: Callable[..., Job]) -> None:
    job = running(submit(alice))
    assert telemetry.run_cycle().groups == 0
    listeners.join("web-1", [f"job.{job.pk}", f"telemetry.node.{node_of(job)}"])
    assert telemetry.run_cycle().groups == 2


# --- only changed rows -------------------------------------------------------------------------------


def test_only_jobs_with_news_are_written(grid: SimulatorBackend, alice: User, submit: Callable[..., Job]) -> None:
    seen, unseen = running(submit(alice)), running(submit(alice))
    telemetry.run_cycle()  # creates both rows
    policy = telemetry.idle_policy("vision")
    mine = [s for s in SimulatorTelemetry().samples() if s.portal_job_id == seen.pk]  # the other job's GPUs unseen
    view = view_of_samples(mine, policy.threshold)
    changes, _ = guard.decide_jobs(
        view.jobs,
        view.tallies,
        {seen.pk: seen.gpus, unseen.pk: unseen.gpus},
        {seen.pk: policy, unseen.pk: policy},
        timezone.now(),
    )
    assert [c.job_id for c in changes] == [seen.pk]  # the unseen job adds nothing and had no streak to end
    before = JobEfficiency.objects.get(portal_job_id=unseen.pk)
    guard.write_efficiency(changes, timezone.now())
    assert JobEfficiency.objects.get(portal_job_id=seen.pk).samples == 2 * seen.gpus
    after = JobEfficiency.objects.get(portal_job_id=unseen.pk)
    assert (after.samples, after.updated_at) == (before.samples, before.updated_at)


def test_guard_memories_that_did_not_change_are_not_rewritten(grid: SimulatorBackend) -> None:
    telemetry.run_cycle()
    stamps = dict(GuardState.objects.values_list("node", "updated_at"))
    assert stamps and len(stamps) == Node.objects.count()
    telemetry.run_cycle(now=timezone.now() + timedelta(seconds=30))
    assert dict(GuardState.objects.values_list("node", "updated_at")) == stamps


# --- stale data decides nothing ----------------------------------------------------------------------


def test_a_hot_node_whose_samples_are_stale_is_not_cordoned(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job]
) -> None:
    job = running(submit(alice), load=0.95)
    node = node_of(job)
    grid.inject_fault(node, "overheat")
    later = timezone.now() + timedelta(seconds=150)
    report = telemetry.run_cycle(source=Without(node), now=later)
    assert report.guarded == [] and Node.objects.get(name=node).state == NodeState.READY
    report = telemetry.run_cycle(now=later)  # the same node, seen: cordoned
    assert [(o.node, o.action) for o in report.guarded] == [(node, "cordon")]


def test_a_job_whose_samples_are_stale_is_not_counted_idle(
    grid: SimulatorBackend, alice: User, submit: Callable[..., Job], settings: Settings
) -> None:
    settings.IDLE_WARN_AFTER_S = 0
    job = running(submit(alice), load=0.0)
    report = telemetry.run_cycle(source=Without(node_of(job)))
    assert report.idle == [] and JobEfficiency.objects.get(portal_job_id=job.pk).idle_since is None
    report = telemetry.run_cycle()
    assert [o.portal_job_id for o in report.idle] == [job.pk]


class RecordedOnly:
    """Like the Prometheus source: the grid's samples without power; a few hosts' whole."""

    def __init__(self) -> None:
        self.asked: list[list[str] | None] = []

    def samples(self, hosts: list[str] | None = None, at: datetime | None = None) -> list[GpuSample]:
        self.asked.append(hosts)
        whole = SimulatorTelemetry().samples(hosts, at)
        return whole if hosts is not None else [replace(s, power_w=math.nan) for s in whole]

    def history(self, hosts: list[str], start: datetime, end: datetime, step_s: float) -> list[tuple[datetime, list[GpuSample]]]:
        return []


def test_a_watched_node_page_gets_its_gpus_read_whole_and_no_other_node_is_read(grid: SimulatorBackend) -> None:
    source = RecordedOnly()
    listeners.join("web-1", ["telemetry.node.onprem-h100-01"])
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("telemetry.node.onprem-h100-01", channel)
    assert telemetry.run_cycle(source=source).groups == 1
    assert source.asked == [None, ["onprem-h100-01"]]
    message = async_to_sync(layer.receive)(channel)
    assert message["node"] == "onprem-h100-01" and all(row[4] is not None for row in message["gpus"])  # power
