"""The local Slurm cluster for tests marked `slurm`, started once per session by scripts/slurm-dev-cluster.

If the cluster already runs (a developer started it), the tests use it and leave it running;
otherwise they start it and stop it at the end. Outside CI a cluster that cannot start skips these
tests with the reason; under CI=true the root conftest turns that skip into a failure.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from pytest_django import Settings

from cluster import services as cluster_services
from cluster.backends.slurm import SlurmBackend
from cluster.backends.slurm.rest import BREAKER_KEY
from jobs import services as job_services
from jobs.models import Job
from portal.models import Team, User
from quotas.models import PriorityClass, TeamQuota

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-dev-cluster"
CLOUD_PARTITION = "burst-a10g"  # the dev cluster's power-save slots (State=CLOUD), burst-a10g-[1-2]
_test_numbers = itertools.count(1)


def cluster_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("the dev Slurm cluster needs root (it installs packages and starts system daemons)")
    if cluster_script("status").returncode == 0:
        yield  # someone else's running cluster: use it, leave it running
        return
    started = cluster_script("start")
    if started.returncode != 0:
        pytest.skip(f"the dev Slurm cluster did not start: {(started.stderr or started.stdout).strip()[-500:]}")
    try:
        yield
    finally:
        cluster_script("stop")


@pytest.fixture
def slurm(slurm_cluster: None, settings: Settings, db: None) -> Iterator[SlurmBackend]:
    """The Slurm backend as the portal's backend; job names get a prefix unique to this test.

    Whatever the test leaves queued or running on Slurm is cancelled afterwards.
    """
    prefix = f"t{os.getpid()}n{next(_test_numbers)}"
    settings.CLUSTER_BACKEND = "slurm"
    settings.SLURM_JOB_PREFIX = prefix
    settings.SLURM_PREEMPT_GRACE_S = 5
    settings.SLURM_TIMEOUT_S = 5
    settings.SLURM_BACKOFF_MAX_S = 2
    settings.DISPATCH_STALE_S = 600
    settings.SLURM_CLOUD_PARTITIONS = CLOUD_PARTITION
    settings.SLURM_PARTITIONS = f"a10g={CLOUD_PARTITION}"  # A10G exists only as burst nodes here
    cache.delete(BREAKER_KEY)
    yield SlurmBackend()
    listed = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=False).stdout
    leftovers = [line.split()[0] for line in listed.splitlines() if line.split()[-1].startswith(f"{prefix}-")]
    if leftovers:
        subprocess.run(["scancel", *leftovers], check=False)


@pytest.fixture
def slurm_world(slurm: SlurmBackend, alice: User, vision: Team) -> SlurmBackend:
    """Priority classes, vision's quotas and alice compiled into Slurm; Slurm's nodes in the portal."""
    for name, rank, preemptible in (("critical", 100, False), ("standard", 50, False), ("preemptible", 10, True)):
        PriorityClass.objects.update_or_create(name=name, defaults={"rank": rank, "preemptible": preemptible})
    TeamQuota.objects.create(team=vision, gpu_model="h100", guarantee=0, limit=16)
    call_command("sync_slurm", "--apply", stdout=open(os.devnull, "w"))  # noqa: SIM115 - closed with the process
    cluster_services.sync_nodes(slurm)
    return slurm


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def portal_job(user: User, **fields: Any) -> Job:
    """Submit through the portal's service layer, admit and dispatch it; return the dispatched job."""
    raw = {"name": "job", "gpu_model": "a100", "gpus_per_node": 1, "walltime": 300, "command": ["sleep", "2"], **fields}
    job = job_services.submit(user, raw)[0]
    job_services.run_admission_cycle()
    job_services.dispatch(job.pk)
    job.refresh_from_db()
    assert job.state == "dispatched", f"job {job.pk} is {job.state}: {job.reason_detail}"
    return job


def sync_until(job: Job, states: set[str], timeout: float = 30) -> Job:
    def reached() -> bool:
        job_services.sync_jobs()
        job.refresh_from_db()
        return job.state in states

    wait_for(reached, timeout, f"job {job.pk} to reach {sorted(states)} (last: {job.state})")
    return job
