"""Drill run by hand (scripts/drills/slurmctld-minute): slurmctld stopped for a minute while the portal serves.

Not collected by the default test run (the file name does not start with `test_`): it holds the
dev cluster's controller down for OUTAGE_S seconds (default 60). During the outage pages answer,
/healthz says the backend is down, sync and dispatch fail as retryable, and jobs submitted wait
admitted. After `ctld-start` the portal catches up by itself and every job is on Slurm once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from functools import partial

import pytest
from django.test import Client

from cluster.backends.base import BackendUnavailable
from cluster.backends.slurm import SlurmBackend
from grid import health
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from tests.slurm.conftest import cluster_script, portal_job, slurm, slurm_cluster, slurm_world, sync_until, wait_for

__all__ = ["slurm", "slurm_cluster", "slurm_world"]  # fixtures, imported to be found here
pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]
OUTAGE_S = float(os.environ.get("OUTAGE_S", "60"))


def on_slurm(prefix: str, job_id: int) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "--name", f"{prefix}-{job_id}", "-o", "%i"], capture_output=True, text=True
    )
    return out.stdout.split()


def tolerant(call: Callable[[], object]) -> None:
    """As a retrying task would: a backend that is down is tried again later."""
    with contextlib.suppress(BackendUnavailable):
        call()


def test_a_minute_without_slurmctld(slurm_world: SlurmBackend, alice: User, web: Callable[[User | None], Client]) -> None:
    running = portal_job(alice, command=["sleep", str(int(OUTAGE_S) + 20)])
    sync_until(running, {JobState.RUNNING})
    assert cluster_script("ctld-stop").returncode == 0
    waiting: list[int]  # ids of the jobs submitted during the outage
    stopped, pages, unhealthy, waiting = time.monotonic(), 0, 0, []
    try:
        while time.monotonic() - stopped < OUTAGE_S:
            client = web(alice)
            pages += sum(client.get(p).status_code == 200 for p in ("/", "/jobs/", f"/jobs/{running.pk}/"))
            unhealthy += health.run_checks()["checks"]["backend"]["ok"] is False
            if len(waiting) < 3:
                raw = {"name": "outage", "gpu_model": "a100", "gpus_per_node": 1, "walltime": 300, "command": ["true"]}
                waiting.append(job_services.submit(alice, raw)[0].pk)
            job_services.run_admission_cycle()
            tolerant(job_services.sync_jobs)
            for job_id in waiting:
                tolerant(partial(job_services.dispatch, job_id))
            time.sleep(5)
        assert set(Job.objects.filter(pk__in=waiting).values_list("state", flat=True)) == {JobState.ADMITTED}
    finally:
        assert cluster_script("ctld-start").returncode == 0
    outage = time.monotonic() - stopped
    back = time.monotonic()

    def caught_up() -> bool:
        tolerant(job_services.reap_stale)
        for job_id in waiting:
            tolerant(partial(job_services.dispatch, job_id))
        tolerant(job_services.sync_jobs)
        return not Job.objects.filter(pk__in=[*waiting, running.pk]).exclude(state=JobState.SUCCEEDED).exists()

    wait_for(caught_up, 120, "every job to finish after slurmctld returned", interval=2)
    prefix = slurm_world.config.job_prefix
    copies = {job_id: len(on_slurm(prefix, job_id)) for job_id in [*waiting, running.pk]}
    assert set(copies.values()) == {1}, copies
    print(
        f"drill slurmctld-minute: controller down {outage:.0f} s; {pages} page views answered 200, /healthz backend down "
        f"in {unhealthy} checks; {len(waiting)} jobs submitted during the outage waited admitted; caught up "
        f"{time.monotonic() - back:.0f} s after restart; every job on Slurm once: {copies}"
    )
