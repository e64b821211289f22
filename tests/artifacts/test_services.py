"""A job's locations, what the job is told, retention in batches, usage and its cost."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from pytest_django import Settings as SettingsWrapper

from artifacts import services
from artifacts.models import JobArtifacts, TeamArtifacts
from billing.services import add_storage_rate
from jobs.models import Job
from jobs.states import JobState
from portal.models import User


def finish(job: Job, days_ago: float) -> None:
    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED, finished_at=timezone.now() - timedelta(days=days_ago))


def test_without_a_store_a_job_is_told_nothing(alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice)
    assert services.job_environment(job) == {}
    assert services.list_files(job) == [] and services.measure_usage() == {} and services.purge_expired() == 0


def test_on_a_path_store_a_job_gets_directories_under_its_team_and_id(
    file_store: Path, alice: User, submit: Callable[..., Job]
) -> None:
    job = submit(alice, checkpoint_interval=120)
    env = services.job_environment(job)
    root = file_store.resolve()
    assert env["GRID_OUTPUT_DIR"] == str(root / f"vision/{job.pk}/output")
    assert env["GRID_CHECKPOINT_DIR"] == str(root / f"vision/{job.pk}/checkpoints")
    assert env["GRID_ARTIFACT_STORE"] == "file"
    row = JobArtifacts.objects.get(job=job)
    assert (row.output, row.checkpoints, row.team_id) == (
        f"vision/{job.pk}/output/",
        f"vision/{job.pk}/checkpoints/",
        job.team_id,
    )
    assert services.job_environment(job) == env and JobArtifacts.objects.count() == 1  # the same places every time


def test_on_s3_a_job_gets_urls_and_where_to_ask_for_upload_urls(s3_store: Any, alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice)
    env = services.job_environment(job)
    bucket = s3_store.bucket
    assert env["GRID_OUTPUT_URL"] == f"s3://{bucket}/site/vision/{job.pk}/output/"
    assert env["GRID_CHECKPOINT_URL"] == f"s3://{bucket}/site/vision/{job.pk}/checkpoints/"
    assert env["GRID_ARTIFACT_UPLOAD_API"] == f"/api/v1/artifacts/jobs/{job.pk}/uploads/"
    assert env["GRID_ARTIFACT_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert "GRID_OUTPUT_DIR" not in env


def test_it_lists_a_jobs_files_by_path_and_only_that_jobs(
    any_store: str, alice: User, submit: Callable[..., Job], put: Callable[..., None]
) -> None:
    job, other = submit(alice), submit(alice)
    put(job, "output/result.csv", b"a,b\n")
    put(job, "checkpoints/step-10.pt", b"w" * 1000)
    put(other, "output/result.csv", b"nope")
    files = services.list_files(job)
    assert [(f.path, f.area, f.size) for f in files] == [
        ("checkpoints/step-10.pt", "checkpoints", 1000),
        ("output/result.csv", "output", 4),
    ]


def test_retention_deletes_files_of_jobs_finished_longer_ago_in_batches(
    any_store: str, settings: SettingsWrapper, alice: User, carol: User, submit: Callable[..., Job], put: Callable[..., None]
) -> None:
    settings.ARTIFACT_RETENTION_DAYS = 0  # the site keeps files forever; vision keeps them 7 days
    services.set_retention(User.objects.create(username="op", is_operator=True), alice.memberships.get().team, 7)
    old = [submit(alice) for _ in range(5)]
    recent, running, other_team = submit(alice), submit(alice), submit(carol, team="render")
    for job in [*old, recent, running, other_team]:
        put(job, "output/x.bin", b"1234")
    for job in old:
        finish(job, 10)
    finish(recent, 2)
    finish(other_team, 400)  # render has no retention of its own and the site keeps forever
    assert services.purge_expired(batch=2) == 5
    assert all(services.list_files(job) == [] for job in old)
    assert all(len(services.list_files(job)) == 1 for job in (recent, running, other_team))
    assert JobArtifacts.objects.filter(purged_at__isnull=False).count() == 5
    assert services.purge_expired(batch=2) == 0  # nothing twice
    assert services.purged_at(old[0]) is not None and services.purged_at(recent) is None
    settings.ARTIFACT_RETENTION_DAYS = 365  # now the site's default reaches render's job
    assert services.purge_expired() == 1 and services.list_files(other_team) == []


def test_usage_is_measured_per_team_and_priced_at_the_storage_rate(
    any_store: str, alice: User, carol: User, submit: Callable[..., Job], put: Callable[..., None]
) -> None:
    add_storage_rate(per_gb_month=Decimal("0.02"), valid_from=date(2020, 1, 1))
    mine, theirs = submit(alice), submit(carol, team="render")
    put(mine, "output/a", b"x" * 1500)
    put(mine, "checkpoints/b", b"x" * 500)
    put(theirs, "output/c", b"x" * 70)
    measured = services.measure_usage()
    assert measured == {mine.team_id: 2000, theirs.team_id: 70}
    row = TeamArtifacts.objects.get(team=mine.team)
    assert (row.usage_bytes, row.usage_files) == (2000, 2) and row.measured_at is not None
    figure = services.usage(alice, mine.team)
    assert figure is not None and figure.usage_bytes == 2000 and figure.rate_per_gb_month == Decimal("0.02")
    assert figure.monthly_cost == Decimal("0.00")  # 2 kB is nothing; the arithmetic is in test_layout
    assert services.usage(carol, mine.team) is None  # another team's figure is not carol's to see


def test_only_a_lead_or_an_operator_sets_retention(alice: User, bob: User, olivia: User, submit: Callable[..., Job]) -> None:
    team = submit(alice).team
    with pytest.raises(services.ArtifactForbidden):
        services.set_retention(alice, team, 30)
    assert services.set_retention(bob, team, 30).retention_days == 30
    assert services.set_retention(olivia, team, None).retention_days is None


def test_without_a_storage_rate_card_the_figure_has_no_price(
    any_store: str, alice: User, submit: Callable[..., Job], put: Callable[..., None]
) -> None:
    put(submit(alice), "output/a", b"x" * 10)
    services.measure_usage()
    figure = services.usage(alice, alice.teams.get())
    assert figure is not None and figure.usage_bytes == 10
    assert (figure.rate_per_gb_month, figure.monthly_cost, figure.month_cost) == (None, None, Decimal("0.00"))
