"""Invariants under concurrency on PostgreSQL: many submitters, admission cycles, dispatchers and syncs."""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.db.models import Sum
from pytest_django import Settings

from cluster import services as cluster_services
from cluster.models import Node, SimJob
from cluster.simulator.backend import SimulatorBackend
from cluster.simulator.model import parse_pools
from jobs import policy, services
from jobs.models import Job, JobEvent
from jobs.states import HOLDS_GPUS, JobState
from portal.models import Membership, Team, User
from quotas.models import TeamQuota
from tests.conftest import TEST_POOLS

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def in_threads(workers: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
            finally:
                connection.close()

        return run

    threads = [threading.Thread(target=wrap(w)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_hammering_submission_and_admission_never_breaks_limits_or_capacity(settings: Settings) -> None:
    assert connection.vendor == "postgresql"
    settings.CELERY_TASK_ALWAYS_EAGER = False  # the threads below do the worker's job
    cluster_services.sync_nodes(SimulatorBackend(pools=parse_pools(TEST_POOLS)))
    teams = [Team.objects.create(slug=f"team-{i}", name=f"Team {i}") for i in range(3)]
    users = []
    for i, team in enumerate(teams):
        TeamQuota.objects.create(team=team, gpu_model="a100", guarantee=2, limit=5 + i)
        user = User.objects.create_user(f"user{i}")
        Membership.objects.create(user=user, team=team)
        users.append(user)

    def submitter(user: User, seed: int) -> Callable[[], None]:
        def work() -> None:
            rng = random.Random(seed)
            for n in range(15):
                services.submit(
                    user,
                    {
                        "name": f"j{seed}-{n}",
                        "command": ["x"],
                        "gpu_model": "a100",
                        "gpus_per_node": rng.choice([1, 2, 3]),
                        "walltime": 3600,
                    },
                )

        return work

    rounds, racers = 12, 4
    barrier = threading.Barrier(racers)

    def cycler() -> None:
        # Racers start each round together, with dispatch, sync and cancellations in between,
        # and every racer checks the invariants after every round.
        for _ in range(rounds):
            barrier.wait(timeout=60)
            for job_id in services.run_admission_cycle():
                services.dispatch(job_id)
            services.sync_jobs()
            barrier.wait(timeout=60)
            check_invariants(teams)
            barrier.wait(timeout=60)
            release_some()
            barrier.wait(timeout=60)

    lock = threading.Lock()

    def release_some() -> None:
        with lock:  # one racer frees capacity between rounds by cancelling a few running jobs
            for victim in Job.objects.filter(state__in=HOLDS_GPUS).order_by("?")[:3]:
                with contextlib.suppress(services.JobActionError):
                    services.cancel(victim.owner, victim)

    errors = in_threads([submitter(u, i) for i, u in enumerate(users)] * 2)
    assert not errors, errors
    errors = in_threads([cycler] * racers)
    assert not errors, errors

    assert Job.objects.count() == 90
    check_invariants(teams)
    admissions = Counter(JobEvent.objects.filter(to_state=JobState.ADMITTED).values_list("job_id", flat=True))
    assert len(admissions) > 20 and max(admissions.values()) == 1
    backend_copies = Counter(SimJob.objects.values_list("portal_job_id", flat=True))
    assert max(backend_copies.values()) == 1
    assert set(backend_copies) <= set(admissions)


def check_invariants(teams: list[Team]) -> None:
    held = Job.objects.filter(state__in=HOLDS_GPUS)
    for team in teams:
        used = held.filter(team=team).aggregate(g=Sum("gpus"))["g"] or 0
        assert used <= TeamQuota.objects.get(team=team).limit, team.slug
    per_node: dict[str, int] = defaultdict(int)
    for placement in held.values_list("placement", flat=True):
        for node, gpus in placement.items():
            per_node[node] += gpus
    capacity = dict(Node.objects.values_list("name", "gpus"))
    assert all(per_node[n] <= capacity[n] for n in per_node), per_node


def test_two_admission_cycles_that_overlap_cannot_both_spend_the_same_quota(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cycle A decides, then stalls; cycle B sees a different queue. Only the lock keeps B from over-admitting."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setattr(services, "after_commit", lambda *args: None)  # only the two cycles below may admit
    cluster_services.sync_nodes(SimulatorBackend(pools=parse_pools(TEST_POOLS)))
    team = Team.objects.create(slug="solo", name="Solo")
    TeamQuota.objects.create(team=team, gpu_model="a100", guarantee=0, limit=4)
    user = User.objects.create_user("solo-user")
    Membership.objects.create(user=user, team=team)
    raw = {"command": ["x"], "gpu_model": "a100", "gpus_per_node": 4, "walltime": 3600}
    first = services.submit(user, {**raw, "name": "first"})[0]

    decided, go = threading.Event(), threading.Event()
    real_cycle = policy.run_cycle

    def stalling_cycle(*args: Any, **kwargs: Any) -> Any:
        result = real_cycle(*args, **kwargs)
        if threading.current_thread().name == "cycle-a":
            decided.set()
            go.wait(timeout=10)
        return result

    monkeypatch.setattr(policy, "run_cycle", stalling_cycle)

    def cycle() -> None:
        try:
            services.run_admission_cycle()
        finally:
            connection.close()

    a = threading.Thread(target=cycle, name="cycle-a")
    a.start()
    assert decided.wait(timeout=10)
    older = services.submit(user, {**raw, "name": "older"})[0]
    Job.objects.filter(pk=older.pk).update(submitted_at=first.submitted_at.replace(year=2000))
    b = threading.Thread(target=cycle, name="cycle-b")
    b.start()
    b.join(timeout=1.0)  # without the lock, B finishes here having admitted `older`
    go.set()
    a.join(timeout=20)
    b.join(timeout=20)

    used = Job.objects.filter(team=team, state__in=HOLDS_GPUS).aggregate(g=Sum("gpus"))["g"]
    assert used == 4, f"team holds {used} GPUs with a limit of 4"
