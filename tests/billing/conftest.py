"""Billing fixtures: pools, rate cards, and jobs with a hand-written event history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing import services
from billing.models import RateCard
from cluster.models import Pool
from jobs.models import Job, JobEvent
from portal.models import Team, User


def at(text: str) -> datetime:
    """A UTC instant from 'YYYY-MM-DD HH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def pools(db: None) -> dict[str, Pool]:
    return {
        p.name: p
        for p in (
            Pool.objects.create(name="onprem-a100", kind="onprem", gpu_model="a100"),
            Pool.objects.create(name="onprem-h100", kind="onprem", gpu_model="h100"),
            Pool.objects.create(name="burst-a100", kind="cloud", gpu_model="a100"),
        )
    }


@pytest.fixture
def rates(pools: dict[str, Pool]) -> dict[str, RateCard]:
    """a100 on-prem 2.00/GPU-hour, a100 cloud 3.50, h100 on-prem 4.00, all since 2024-01-01."""
    since = date(2024, 1, 1)
    return {
        "a100-onprem": services.add_rate_card(
            gpu_model="a100", pool_kind="onprem", per_gpu_hour=Decimal("2.00"), valid_from=since
        ),
        "a100-cloud": services.add_rate_card(gpu_model="a100", pool_kind="cloud", per_gpu_hour=Decimal("3.50"), valid_from=since),
        "h100-onprem": services.add_rate_card(
            gpu_model="h100", pool_kind="onprem", per_gpu_hour=Decimal("4.00"), valid_from=since
        ),
    }


History = list[tuple[str, str]]  # (time, state entered)


@pytest.fixture
def job_with_history(db: None) -> Callable[..., Job]:
    """A job of `team` whose events are exactly the given (time, state) pairs, starting with its submission."""

    def make(
        team: Team, owner: User, history: History, *, gpus: int = 1, gpu_model: str = "a100", pool: str = "onprem-a100"
    ) -> Job:
        last_state = history[-1][1]
        job = Job.objects.create(
            team=team,
            owner=owner,
            name="billed",
            gpu_model=gpu_model,
            gpus_per_node=gpus,
            gpus=gpus,
            walltime_s=86400,
            state=last_state,
            submitted_at=at(history[0][0]),
            backend="simulator",
            pool=pool if last_state in {"admitted", "dispatched", "running", "preempting"} else "",
        )
        previous = ""
        for when, state in history:
            why = f"admitted to {pool}" if state == "admitted" else ""
            JobEvent.objects.create(
                job=job, at=at(when), from_state=previous, to_state=state, actor="system", reason=why,
                pool=pool if state == "admitted" else "",
            )  # fmt: skip
            previous = state
        return job

    return make
