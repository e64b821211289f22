"""The console's recovery page and restore button: operators only; the team's own members and outsiders are refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from jobs.models import Job
from portal.models import User
from recovery import services
from recovery.models import Restore, Snapshot


@pytest.fixture
def night(
    file_store: Path, replica: Any, alice: User, submit: Callable[..., Job], put: Callable[[Any, str, bytes], None]
) -> tuple[Snapshot, Job]:
    job = submit(alice)
    put(job, "checkpoints/step-100.pt", b"a" * 100)
    services.nightly()
    return Snapshot.objects.get(), job


@pytest.mark.parametrize("who", ["alice", "bob", "carol"])  # a member and the lead of the snapshot's team, an outsider
def test_non_operators_neither_see_snapshots_nor_restore(
    who: str, night: tuple[Snapshot, Job], web: Callable[[User | None], Client], alice: User, bob: User, carol: User
) -> None:
    snapshot, job = night
    user = {"alice": alice, "bob": bob, "carol": carol}[who]
    assert web(user).get("/console/recovery/").status_code == 404
    assert web(user).post(f"/console/recovery/{snapshot.pk}/restore/", {"job": job.pk}).status_code == 403
    assert not Restore.objects.exists()


def test_an_operator_sees_the_snapshots_and_restores_a_job(
    night: tuple[Snapshot, Job], web: Callable[[User | None], Client], olivia: User
) -> None:
    snapshot, job = night
    page = web(olivia).get("/console/recovery/").content.decode()
    assert snapshot.name in page and f"#{job.pk}" in page and 'name="job"' in page
    refused = web(olivia).post(f"/console/recovery/{snapshot.pk}/restore/", {"job": "nine"}, follow=True).content.decode()
    assert "job: must be a whole number of at least 1, not &#x27;nine&#x27;" in refused
    done = web(olivia).post(f"/console/recovery/{snapshot.pk}/restore/", {"job": job.pk}, follow=True).content.decode()
    assert f"Job #{job.pk}: checkpoints restored from snapshot #{snapshot.pk}" in done
    assert Restore.objects.get().files == 1
