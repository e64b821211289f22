"""The nightly run copies each team's checkpoints into the replica, records each night per team, retries a
failed night, and deletes replicas past their retention in batches."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from pytest_django import Settings

from jobs.models import Job
from portal.models import User
from recovery import layout, services
from recovery.models import Snapshot, SnapshotKind, SnapshotState
from tests.artifacts.conftest import any_store  # noqa: F401  (runs a test on each store)
from tests.recovery.conftest import replica_keys


def test_each_teams_checkpoints_are_copied_into_tonights_replica(
    any_store: str,  # noqa: F811
    replica: Any,
    alice: User,
    carol: User,
    submit: Callable[..., Job],
    put: Callable[[Any, str, bytes], None],
) -> None:
    mine, theirs = submit(alice), submit(carol)
    put(mine, "checkpoints/step-100.pt", b"a" * 100)
    put(mine, "checkpoints/sub/step-200.pt", b"b" * 200)
    put(mine, "output/model.pt", b"not a checkpoint")
    put(theirs, "checkpoints/frame-7.ckpt", b"c" * 7)
    now = timezone.now()

    report = services.nightly(now=now)
    rows = {row.team.slug: row for row in Snapshot.objects.select_related("team")}
    assert set(rows) == {"vision", "render"} and len(report.ready) == 2 and report.failed == []
    vision = rows["vision"]
    assert (vision.kind, vision.state, vision.files, vision.size_bytes, vision.job_ids) == (
        SnapshotKind.REPLICA, SnapshotState.READY, 2, 300, [mine.pk],
    )  # fmt: skip
    assert vision.expires_at == now + timedelta(days=14) and vision.location.endswith(f"vision/{vision.name}/")
    night = layout.snapshot_name(now)
    assert replica_keys(replica) == [
        f"nightly/render/{night}/{theirs.pk}/checkpoints/frame-7.ckpt",
        f"nightly/vision/{night}/{mine.pk}/checkpoints/step-100.pt",
        f"nightly/vision/{night}/{mine.pk}/checkpoints/sub/step-200.pt",
    ]

    assert services.nightly(now=now).taken == []  # the same night again: nothing new
    assert Snapshot.objects.count() == 2


def test_a_team_without_checkpoints_gets_no_row(file_store: Any, replica: Any, alice: User, submit: Callable[..., Job]) -> None:
    submit(alice)
    assert services.nightly().taken == [] and not Snapshot.objects.exists()


def test_a_failed_night_keeps_its_error_and_the_next_night_tries_again(
    file_store: Any,
    replica: Any,
    settings: Settings,
    alice: User,
    submit: Callable[..., Job],
    put: Callable[[Any, str, bytes], None],
) -> None:
    put(submit(alice), "checkpoints/step-1.pt", b"x")
    good = settings.RECOVERY_REPLICA
    settings.RECOVERY_REPLICA = "s3://no-such-bucket/nightly"
    now = timezone.now()
    services.nightly(now=now)
    failed = Snapshot.objects.get()
    assert failed.state == SnapshotState.FAILED and "NoSuchBucket" in failed.error and "copying to the replica" in failed.error

    settings.RECOVERY_REPLICA = good
    services.nightly(now=now + timedelta(days=1))
    retried = Snapshot.objects.exclude(pk=failed.pk).get()
    assert retried.state == SnapshotState.READY and retried.files == 1
    failed.refresh_from_db()
    assert failed.state == SnapshotState.FAILED  # kept, with its error, until its retention ends


def test_a_copy_that_fails_part_way_leaves_no_partial_replica(
    file_store: Any,
    replica: Any,
    monkeypatch: pytest.MonkeyPatch,
    alice: User,
    submit: Callable[..., Job],
    put: Callable[[Any, str, bytes], None],
) -> None:
    job = submit(alice)
    for step in range(3):
        put(job, f"checkpoints/step-{step}.pt", b"x")
    from artifacts.stores import S3Store, StoreError

    real, calls = S3Store.put, []

    def flaky(self: S3Store, key: str, data: Any) -> None:
        calls.append(key)
        if len(calls) == 3:
            raise StoreError("cannot write: SlowDown", retryable=True)
        real(self, key, data)

    monkeypatch.setattr(S3Store, "put", flaky)
    services.nightly()
    row = Snapshot.objects.get()
    assert row.state == SnapshotState.FAILED and "SlowDown" in row.error
    assert replica_keys(replica) == []


def test_replicas_past_their_retention_are_deleted_in_batches(
    file_store: Any,
    replica: Any,
    settings: Settings,
    alice: User,
    submit: Callable[..., Job],
    put: Callable[[Any, str, bytes], None],
) -> None:
    settings.RECOVERY_RETENTION_DAYS, settings.RECOVERY_BATCH = 2, 1
    put(submit(alice), "checkpoints/step-1.pt", b"x")
    start = timezone.now()
    for night in range(4):
        services.nightly(now=start + timedelta(days=night))
    assert Snapshot.objects.filter(state=SnapshotState.DELETED).count() == 2  # nights 0 and 1, one per batch
    kept = Snapshot.objects.filter(state=SnapshotState.READY).order_by("taken_at")
    assert [r.taken_at for r in kept] == [start + timedelta(days=2), start + timedelta(days=3)]
    assert {key.split("/")[2] for key in replica_keys(replica)} == {r.name for r in kept}


def test_a_replica_that_cannot_be_opened_fails_the_night_with_the_reason(
    file_store: Any,
    replica: Any,
    monkeypatch: pytest.MonkeyPatch,
    alice: User,
    submit: Callable[..., Job],
    put: Callable[[Any, str, bytes], None],
) -> None:
    put(submit(alice), "checkpoints/step-1.pt", b"x")
    monkeypatch.delenv("RECOVERY_S3_SECRET_ACCESS_KEY")  # a key id without its secret
    services.nightly()
    row = Snapshot.objects.get()
    assert row.state == SnapshotState.FAILED and "cannot open RECOVERY_REPLICA" in row.error
