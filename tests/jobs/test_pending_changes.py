"""Pending counts kept by the database: every write path that makes a job pending or takes it out of the
queue leaves the team's and the owner's sums of `PendingChange` equal to the jobs pending, folding
keeps the sums, and a change not yet committed while a team is folded still counts once it commits."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Count, Sum
from pytest_django import Settings

from jobs import services as job_services
from jobs.models import Job, PendingChange
from jobs.spec import SpecError
from jobs.states import JobState
from portal.models import Membership, Team, User

BODY = {"name": "q", "command": ["true"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}
ROOT = Path(__file__).resolve().parents[2]


def counted() -> dict[tuple[int, int], int]:
    """(team, owner) -> pending jobs, counted."""
    rows = Job.objects.filter(state=JobState.PENDING).values_list("team_id", "owner_id").annotate(n=Count("id"))
    return {(team, owner): n for team, owner, n in rows}


def tallied() -> dict[tuple[int, int], int]:
    """(team, owner) -> the sum of its pending changes, zero sums left out."""
    rows = PendingChange.objects.values_list("team_id", "owner_id").annotate(n=Sum("delta"))
    return {(team, owner): n for team, owner, n in rows if n}


def test_every_write_path_keeps_the_sums_equal_to_the_pending_jobs(
    settings: Settings, grid: Any, alice: User, bob: User, vision: Team, render: Team
) -> None:
    Membership.objects.create(user=alice, team=render)
    rng = random.Random(7)
    for step in range(60):
        who = rng.choice([alice, bob])
        action = rng.choice(["one", "array", "admit", "cancel", "requeue", "delete", "move", "import", "save"])
        pending = list(Job.objects.filter(state=JobState.PENDING).order_by("?")[:3])
        if action == "one":
            team = rng.choice(["vision", "render"]) if who == alice else "vision"
            job_services.submit(who, {**BODY, "team": team})
        elif action == "array":
            job_services.submit(who, {**BODY, "team": "vision", "array": f"0-{rng.randint(1, 6)}"})
        elif action == "admit":
            job_services.run_admission_cycle()
        elif action == "cancel" and pending:
            job_services.cancel(pending[0].owner, pending[0], "not needed")
        elif action == "requeue":  # a job sent back to the queue (reaper, lost node)
            Job.objects.filter(state=JobState.ADMITTED).update(state=JobState.PENDING)
        elif action == "delete" and pending:
            Job.objects.filter(pk__in=[j.pk for j in pending]).delete()
        elif action == "move" and pending:  # an operator moves a waiting job to another team
            Job.objects.filter(pk=pending[0].pk).update(team=render)
        elif action == "import":
            Job.objects.bulk_create(
                [
                    Job(owner=who, team=vision, name=f"i{step}-{i}", gpu_model="a100", gpus_per_node=1, gpus=1, walltime_s=600)
                    for i in range(3)
                ]
            )
        elif action == "save" and pending:  # a full save that leaves the state alone changes nothing
            pending[0].name = "renamed"
            pending[0].save()
        assert tallied() == counted(), f"step {step}: {action}"
    assert sum(counted().values()) > 0  # the walk left jobs waiting


def test_the_limits_read_the_sums(settings: Settings, grid: Any, alice: User) -> None:
    settings.MAX_PENDING_JOBS_PER_USER = 4
    job_services.submit(alice, {**BODY, "array": "0-2"})
    Job.objects.filter(owner=alice).update(state=JobState.RUNNING)  # out of the queue: room again
    job_services.submit(alice, {**BODY, "array": "0-3"})
    with pytest.raises(SpecError, match="you have 4 jobs waiting"):
        job_services.submit(alice, dict(BODY))


def test_folding_keeps_the_sums_and_bounds_the_rows(settings: Settings, grid: Any, alice: User, bob: User, vision: Team) -> None:
    for i in range(job_services.PENDING_FOLD_AT + 20):
        job_services.submit(alice if i % 3 else bob, dict(BODY))
        if i % 5 == 0:
            Job.objects.filter(pk=Job.objects.filter(state=JobState.PENDING).order_by("id").values("id")[:1]).update(
                state=JobState.CANCELLED
            )
    rows = PendingChange.objects.filter(team_id=vision.pk).count()
    assert rows <= job_services.PENDING_FOLD_AT + 2  # folded at least once on the way
    assert tallied() == counted()
    with transaction.atomic():
        job_services.fold_pending_changes(vision.pk)
    assert PendingChange.objects.filter(team_id=vision.pk).count() == 2  # one per owner
    assert tallied() == counted()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_change_not_committed_while_the_team_is_folded_still_counts(grid: Any) -> None:
    assert connection.vendor == "postgresql"
    team = Team.objects.create(slug="fold", name="Fold")
    user = User.objects.create_user("folder", password="x")
    Membership.objects.create(user=user, team=team)
    Job.objects.bulk_create(
        [Job(owner=user, team=team, name=f"a{i}", gpu_model="a100", gpus_per_node=1, gpus=1, walltime_s=600) for i in range(5)]
    )
    inserted, folded = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_import() -> None:
        try:
            with transaction.atomic():
                Job.objects.bulk_create(
                    [Job(owner=user, team=team, name="late", gpu_model="a100", gpus_per_node=1, gpus=1, walltime_s=600)]
                )
                inserted.set()
                assert folded.wait(30)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_import)
    thread.start()
    assert inserted.wait(30)
    with transaction.atomic():
        job_services.fold_pending_changes(team.pk)
    folded.set()
    thread.join(30)
    assert not errors
    assert tallied() == counted() == {(team.pk, user.pk): 6}


def test_a_migrated_sqlite_database_keeps_the_sums_too(tmp_path: Path) -> None:
    """The embedded default: SQLite's triggers, after every migration (one that rebuilds the job table
    would drop them)."""
    script = """
import django, os, sys
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import connection
assert connection.vendor == "sqlite", connection.vendor
from cluster import services as cluster_services
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import Membership, Team, User
from tests.jobs.test_pending_changes import BODY, counted, tallied
cluster_services.sync_nodes()
team = Team.objects.create(slug="embedded", name="Embedded")
user = User.objects.create_user("sqlite-user", password="x")
Membership.objects.create(user=user, team=team)
job_services.submit(user, dict(BODY))
job_services.submit(user, {**BODY, "array": "0-9"})
Job.objects.update(state=JobState.PENDING)  # all back in the queue, whatever admission did meanwhile
first = Job.objects.order_by("id").first()
job_services.cancel(user, first, "no")
Job.objects.filter(array_index__lt=3).update(state=JobState.RUNNING)
Job.objects.filter(array_index=9).delete()
assert tallied() == counted() == {(team.pk, user.pk): 6}, (tallied(), counted())
print("sums ok")
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "grid.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "PORTAL_DATA_DIR": str(tmp_path),
        "DEBUG": "true",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sums ok" in done.stdout


def test_counted_and_tallied_disagree_when_a_change_is_missing(grid: Any, alice: User) -> None:
    """The checks above can fail: a change row removed by hand shows."""
    job_services.submit(alice, dict(BODY))
    PendingChange.objects.all().delete()
    assert tallied() != counted()
    assert Counter(counted().values()) == Counter({1: 1})
