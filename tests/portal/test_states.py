"""portal.states: the one way to change state (table + conditional UPDATE + the state really left)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from billing.choices import INVOICE_TRANSITIONS
from cluster import services as cluster_services
from cluster.models import Node, NodeEvent
from cluster.simulator.backend import SimulatorBackend
from cluster.states import NodeState
from jobs.models import Job
from jobs.states import TRANSITIONS, JobState
from portal.models import User
from portal.states import Transitions, move


def test_a_table_answers_which_states_lead_where() -> None:
    table = Transitions({"a": {"b"}, "b": {"c", "a"}, "c": set()})
    assert table.sources_of("a") == {"b"} and table.sources_of("c") == {"b"} and table.sources_of("z") == frozenset()
    assert table.allows("a", "b") and not table.allows("a", "c") and not table.allows("c", "a")
    assert INVOICE_TRANSITIONS.allows("draft", "finalised") and not INVOICE_TRANSITIONS.allows("finalised", "draft")


def test_a_move_happens_only_from_an_allowed_state_and_reports_the_state_left(alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice)
    assert move(Job, job.pk, JobState.RUNNING, TRANSITIONS) is None  # pending may not jump to running
    assert move(Job, job.pk, JobState.ADMITTED, TRANSITIONS, pool="onprem-a100") == JobState.PENDING
    job.refresh_from_db()
    assert job.state == JobState.ADMITTED and job.pool == "onprem-a100"
    assert move(Job, job.pk, JobState.ADMITTED, TRANSITIONS) is None  # a repeated delivery changes nothing
    assert move(Job, 10**9, JobState.ADMITTED, TRANSITIONS) is None  # no such row


def test_a_node_event_records_the_state_the_node_really_left(grid: SimulatorBackend, olivia: User) -> None:
    node = Node.objects.order_by("name").first()
    assert node is not None
    stale = Node.objects.get(pk=node.pk)
    Node.objects.filter(pk=node.pk).update(state=NodeState.DOWN)  # changed behind the caller's back
    cluster_services.cordon(stale.name, "olivia", "fan replaced")
    event = NodeEvent.objects.get(node=node)
    assert (event.from_state, event.to_state) == (NodeState.DOWN, NodeState.CORDONED)


@pytest.mark.parametrize("target", list(JobState))
def test_the_job_table_is_the_one_the_service_obeys(target: str) -> None:
    sources = TRANSITIONS.sources_of(target)
    assert all(TRANSITIONS.allows(s, target) for s in sources)
    assert not any(TRANSITIONS.allows(s, target) for s in set(JobState) - sources)
