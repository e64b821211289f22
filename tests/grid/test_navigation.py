"""The navigation offers what the user can do: no "New job" for someone in no team."""

from __future__ import annotations

from collections.abc import Callable

from django.test import Client
from pytest_django import Settings

from jobs.models import Job
from portal.models import Membership, User


def test_new_job_is_offered_only_to_members_of_a_team(
    web: Callable[[User | None], Client], alice: User, olivia: User, fiona: User
) -> None:
    assert b'href="/jobs/new/"' in web(alice).get("/").content
    for outsider in (olivia, fiona):
        assert not Membership.objects.filter(user=outsider).exists()
        assert b'href="/jobs/new/"' not in web(outsider).get("/").content


def test_the_cancel_button_asks_first(web: Callable[[User | None], Client], alice: User, submit: Callable[..., Job]) -> None:
    job = submit(alice, name="asks")
    page = web(alice).get(f"/jobs/{job.pk}/").content.decode()
    assert 'id="cancel-form" data-confirm="Cancel job #' in page and 'id="log-follow" checked' in page


def test_a_waiting_job_shows_a_start_range_not_a_minute(
    web: Callable[[User | None], Client], alice: User, submit: Callable[..., Job], settings: Settings
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    settings.START_ESTIMATE_RATIO_LOW, settings.START_ESTIMATE_RATIO_HIGH = 1.0, 4.0
    job = submit(alice, name="waits")
    Job.objects.filter(pk=job.pk).update(state="pending", estimated_start=timezone.now() + timedelta(hours=1))
    page = web(alice).get(f"/jobs/{job.pk}/").content.decode()
    assert "likely to start between" in page and "estimated start" not in page
    listing = web(alice).get("/jobs/").content.decode()
    assert "likely " in listing
