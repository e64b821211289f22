"""Budgets that act on admission: a team over its budget has new jobs held (reason budget), and
they wait for the hold to be lifted; `lower_priority` sends its jobs to the back of the line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import services as billing
from billing.models import RateCard, TeamRestriction
from cluster import services as cluster_services
from cluster.simulator.backend import SimulatorBackend
from jobs import services
from jobs.models import Job
from jobs.states import JobState
from portal.models import Team, User
from quotas import restrictions


def overspend(vision: Team, alice: User, job_with_history: Callable[..., Job]) -> None:
    now = timezone.now()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = max(month_start, now - timedelta(hours=2))
    job_with_history(
        vision, alice, [(start.strftime("%Y-%m-%d %H:%M:%S"), "admitted"), (now.strftime("%Y-%m-%d %H:%M:%S"), "succeeded")]
    )
    budget = billing.set_budget(vision.pk, Decimal("0.01"), [(Decimal(100), "hold_new_jobs")])
    billing.meter_month(month_start.date(), now=now)
    billing.evaluate_budget(budget.pk, now)


def test_an_over_budget_team_has_its_new_jobs_held_with_reason_budget(
    vision: Team,
    alice: User,
    carol: User,
    rates: dict[str, RateCard],
    job_with_history: Callable[..., Job],
    submit: Callable[..., Job],
) -> None:
    overspend(vision, alice, job_with_history)
    assert restrictions.HOLD_NEW_JOBS in restrictions.active([vision.pk])[vision.pk]
    mine = submit(alice, name="after-budget")
    theirs = submit(carol, name="other-team")
    admitted = services.run_admission_cycle()
    mine.refresh_from_db()
    assert mine.state == JobState.HELD and mine.reason == "budget" and "budget" in mine.reason_detail
    assert theirs.pk in admitted

    TeamRestriction.objects.update(lifted_at=timezone.now())
    assert mine.pk in services.run_admission_cycle()


def test_lower_priority_puts_the_teams_jobs_behind_everyone_elses(
    vision: Team, alice: User, carol: User, render: Team, submit: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = submit(alice, name="vision-job", gpus_per_node=8)
    theirs = [submit(carol, name=f"render-{i}", gpus_per_node=8) for i in range(2)]
    monkeypatch.setattr(
        restrictions, "_providers", [lambda team_id: {restrictions.LOWER_PRIORITY} if team_id == vision.pk else set()]
    )
    admitted = services.run_admission_cycle()
    assert sorted(admitted) == sorted(j.pk for j in theirs)
    mine.refresh_from_db()
    assert mine.state == JobState.PENDING


def test_without_the_budget_action_fair_share_lets_the_team_in(
    vision: Team, alice: User, carol: User, render: Team, submit: Callable[..., Job]
) -> None:
    mine = submit(alice, name="vision-job", gpus_per_node=8)
    [submit(carol, name=f"render-{i}", gpus_per_node=8) for i in range(2)]
    assert mine.pk in services.run_admission_cycle()


def test_a_team_whose_budget_denies_bursts_stays_off_cloud_nodes(
    vision: Team,
    alice: User,
    carol: User,
    render: Team,
    submit: Callable[..., Job],
    grid: SimulatorBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grid.scale_pool("burst-a10g", 2)
    cluster_services.sync_nodes(grid)
    monkeypatch.setattr(
        restrictions, "_providers", [lambda team_id: {restrictions.DENY_BURSTS} if team_id == vision.pk else set()]
    )
    mine = submit(alice, name="vision-a10g", gpu_model="a10g")
    theirs = submit(carol, name="render-a10g", gpu_model="a10g")
    admitted = services.run_admission_cycle()
    assert theirs.pk in admitted and mine.pk not in admitted
    mine.refresh_from_db()
    assert mine.state == JobState.PENDING and mine.reason == "budget" and "denies cloud bursts" in mine.reason_detail
