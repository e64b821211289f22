"""The job serializers' own representation gives what DRF's generic one gives, key for key, from the list's trimmed rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers
from rest_framework.test import APIClient

from jobs.models import Job, JobKind, JobTemplate
from jobs.serializers import JobDetailSerializer, JobSerializer
from jobs.states import JobState, PendingReason
from portal.models import Membership, Team, User


def drf(serializer: serializers.ModelSerializer[Job], job: Job) -> dict[str, object]:
    return dict(serializers.ModelSerializer.to_representation(serializer, job))


@pytest.fixture
def jobs(vision: Team, alice: User) -> list[Job]:
    template = JobTemplate.objects.create(
        slug="train", name="Train", kind=JobKind.TRAINING, image="pytorch:2", command=["python", "t.py"]
    )
    at = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    full = Job.objects.create(
        team=vision, owner=alice, name="full", kind=JobKind.TRAINING, template=template, image="pytorch:2",
        command=["python", "t.py", "--lr=0.1"], env={"A": "1"}, script="#!/bin/sh\n", gpu_model="a100",
        gpus_per_node=2, nodes=2, gpus=4, walltime_s=3600, checkpoint_dir="/ckpt", checkpoint_interval_s=600,
        last_checkpoint_at=at, array_id=uuid.uuid4(), array_index=0, state=JobState.SUCCEEDED,
        reason=PendingReason.QUOTA, reason_detail="over the limit", team_position=0, pool_position=3,
        estimated_start=at + timedelta(minutes=5), submitted_at=at, admitted_at=at, dispatched_at=at,
        started_at=at, finished_at=at + timedelta(hours=1), exit_code=0, pool="a100-onprem",
        placement={"node-1": 2, "node-2": 2}, backend="simulator", backend_job_id="17",
    )  # fmt: skip
    bare = Job.objects.create(team=vision, owner=alice, name="bare", gpu_model="h100", gpus_per_node=1, gpus=1, walltime_s=60)
    return [full, bare]


def test_each_job_reads_as_drf_would_write_it(jobs: list[Job]) -> None:
    for job in Job.objects.select_related("team", "owner", "template").filter(pk__in=[j.pk for j in jobs]):
        for serializer in (JobSerializer(), JobDetailSerializer()):
            assert serializer.to_representation(job) == drf(serializer, job)
            assert list(serializer.to_representation(job)) == list(serializer.fields)


def test_the_trimmed_list_rows_read_the_same_without_another_query(jobs: list[Job]) -> None:
    rows = Job.objects.select_related("team", "owner", "template").only(*JobSerializer.columns()).order_by("id")
    full = Job.objects.select_related("team", "owner", "template").order_by("id")
    with CaptureQueriesContext(connection) as captured:
        trimmed = [JobSerializer().to_representation(job) for job in rows]
    assert len(captured.captured_queries) == 1  # nothing deferred is loaded afterwards
    assert trimmed == [drf(JobSerializer(), job) for job in full]


def test_in_another_time_zone_too(jobs: list[Job]) -> None:
    job = Job.objects.select_related("team", "owner", "template").get(name="full")
    with timezone.override("Europe/Berlin"):
        shown = JobSerializer().to_representation(job)
        assert shown == drf(JobSerializer(), job) and str(shown["submitted_at"]).endswith("+01:00")


def test_a_list_page_costs_the_same_queries_for_one_job_or_fifty(
    vision: Team, alice: User, jobs: list[Job], api: Callable[[User | None], APIClient]
) -> None:
    render = Team.objects.create(slug="render", name="Render")
    Membership.objects.create(user=alice, team=render)
    client = api(alice)
    counts = []
    for extra in (0, 50):
        Job.objects.bulk_create(
            Job(team=render, owner=alice, name=f"x{n}", gpu_model="a100", gpus_per_node=1, gpus=1, walltime_s=60)
            for n in range(extra)
        )
        client.get("/api/v1/jobs/")
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/jobs/").status_code == 200
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1]
