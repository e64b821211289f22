"""Restoring one job's checkpoints from a replica: bad input names its field, a restore is idempotent,
and one that fails part-way leaves the job as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from artifacts.stores import FileStore, StoreError
from jobs import services as job_services
from jobs.models import Job, JobEvent
from jobs.states import JobState
from portal.models import User
from recovery import services
from recovery.layout import RecoveryInputError
from recovery.models import Restore, RestoreState, Snapshot, SnapshotState


@pytest.fixture
def night(
    file_store: Path, replica: Any, alice: User, submit: Callable[..., Job], put: Callable[[Any, str, bytes], None]
) -> tuple[Snapshot, Job]:
    """Last night's replica of vision, holding one requeued job's two checkpoint files, since lost from the store."""
    job = submit(alice)
    put(job, "checkpoints/step-100.pt", b"a" * 100)
    put(job, "checkpoints/step-200.pt", b"b" * 200)
    services.nightly()
    (file_store / f"vision/{job.pk}/checkpoints").rename(file_store / "lost")
    return Snapshot.objects.get(), job


def checkpoints(root: Path, job: Job) -> dict[str, int]:
    folder = root / f"vision/{job.pk}/checkpoints"
    return {p.name: p.stat().st_size for p in folder.iterdir()} if folder.is_dir() else {}


def test_a_restore_puts_the_files_back_and_the_job_waits_to_resume(
    night: tuple[Snapshot, Job], file_store: Path, olivia: User
) -> None:
    snapshot, job = night
    done = services.restore(olivia, snapshot.pk, str(job.pk))
    assert (done.state, done.files, done.requested_by) == (RestoreState.DONE, 2, "olivia")
    assert checkpoints(file_store, job) == {"step-100.pt": 100, "step-200.pt": 200}
    job.refresh_from_db()
    assert job.state == JobState.PENDING
    moves = list(JobEvent.objects.filter(job=job).values_list("to_state", "actor").order_by("at", "id"))[-2:]
    assert moves == [(JobState.HELD, "olivia"), (JobState.PENDING, "olivia")]

    again = services.restore(olivia, snapshot.pk, job.pk)  # idempotent: the first restore, nothing moved or copied again
    assert again.pk == done.pk and Restore.objects.count() == 1
    assert JobEvent.objects.filter(job=job).count() == len(moves) + 1  # submitted, held, pending


@pytest.mark.parametrize(
    ("snapshot", "job", "field", "words"),
    [
        ("abc", "{job}", "snapshot", "whole number"),
        ("0", "{job}", "snapshot", "at least 1"),
        ("999999", "{job}", "snapshot", "no snapshot #999999"),
        ("{snapshot}", "", "job", "whole number"),
        ("{snapshot}", "999999", "job", "no job #999999"),
        ("{snapshot}", "{other_team}", "job", "team render's"),
        ("{snapshot}", "{not_in_it}", "job", "holds no checkpoints of job"),
    ],
)
def test_bad_input_names_the_field(
    night: tuple[Snapshot, Job], olivia: User, carol: User, alice: User, submit: Callable[..., Job],
    snapshot: str, job: str, field: str, words: str,
) -> None:  # fmt: skip
    row, mine = night
    ids = {"snapshot": row.pk, "job": mine.pk, "other_team": submit(carol).pk, "not_in_it": submit(alice).pk}
    with pytest.raises(RecoveryInputError) as refused:
        services.restore(olivia, snapshot.format(**ids), job.format(**ids))
    assert refused.value.field == field and words in str(refused.value)
    assert not Restore.objects.exists()


def test_only_a_ready_snapshot_and_a_waiting_job_are_restored(night: tuple[Snapshot, Job], olivia: User, alice: User) -> None:
    snapshot, job = night
    with pytest.raises(services.RecoveryForbidden):
        services.restore(alice, snapshot.pk, job.pk)
    Job.objects.filter(pk=job.pk).update(state=JobState.RUNNING)
    with pytest.raises(RecoveryInputError, match=r"job: #.* is running; a restore needs a job that waits"):
        services.restore(olivia, snapshot.pk, job.pk)
    Snapshot.objects.filter(pk=snapshot.pk).update(state=SnapshotState.FAILED)
    with pytest.raises(RecoveryInputError, match=r"snapshot: #.* is failed; only a ready snapshot"):
        services.restore(olivia, snapshot.pk, job.pk)


def test_a_restore_that_fails_part_way_changes_nothing_and_can_be_tried_again(
    night: tuple[Snapshot, Job], file_store: Path, olivia: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot, job = night
    real, calls = FileStore.put, []

    def flaky(self: FileStore, key: str, data: Any) -> None:
        calls.append(key)
        if len(calls) == 2:
            raise StoreError("cannot write: No space left on device", retryable=True)
        real(self, key, data)

    monkeypatch.setattr(FileStore, "put", flaky)
    with pytest.raises(services.RecoveryError, match="changed nothing: cannot write: No space left"):
        services.restore(olivia, snapshot.pk, job.pk)
    assert checkpoints(file_store, job) == {}  # the first file it copied is gone again
    failed = Restore.objects.get()
    job.refresh_from_db()
    assert failed.state == RestoreState.FAILED and "No space left" in failed.error and job.state == JobState.PENDING

    monkeypatch.setattr(FileStore, "put", real)
    done = services.restore(olivia, snapshot.pk, job.pk)
    assert done.pk == failed.pk and done.state == RestoreState.DONE and len(checkpoints(file_store, job)) == 2


def test_a_job_admitted_meanwhile_is_not_restored(night: tuple[Snapshot, Job], olivia: User) -> None:
    snapshot, job = night
    assert job_services.transition(job.pk, JobState.ADMITTED, placement={}, pool="")
    with pytest.raises(RecoveryInputError, match=r"job: .* is admitted"):
        services.restore(olivia, snapshot.pk, job.pk)


def test_only_the_portal_names_a_restored_claim(alice: User, submit: Callable[..., Job], settings: Any) -> None:
    from cluster.backends.kubernetes.manifests import CHECKPOINT_CLAIM_ENV

    job = submit(alice, env={CHECKPOINT_CLAIM_ENV: "someone-elses-claim"})
    loaded = Job.objects.select_related("team", "owner").get(pk=job.pk)
    assert job_services.job_request(loaded).env[CHECKPOINT_CLAIM_ENV] == ""  # the team's claim, not the user's pick
    settings.K8S_SNAPSHOT_CLASS = "csi-checkpoints"
    assert job_services.job_request(loaded).env[CHECKPOINT_CLAIM_ENV] == ""
