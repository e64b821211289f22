"""Drill: a Celery worker on Redis killed with SIGKILL again and again while it dispatches.

The simulated controller is slowed down (SIM_SUBMIT_DELAY_S) so kills land between a job's
submit and the portal recording it. Afterwards the portal recovers by itself (the reaper
re-dispatches, dispatch finds the job by portal id) and nothing is lost or done twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.db import connection
from pytest_django import Settings

from cluster.models import SimJob
from cluster.simulator.backend import SimulatorBackend
from jobs import services, tasks
from jobs.models import Job, JobEvent
from jobs.states import JobState
from portal.celery import app as celery_app
from portal.models import Membership, Team, User
from tests.conftest import TEST_POOLS
from tests.services import redis_reachable, redis_url

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
JOBS, ROUNDS = 20, 8


@pytest.fixture
def broker(settings: Settings) -> Iterator[str]:
    url = redis_url()
    if not redis_reachable(url):
        pytest.skip(f"Redis is not reachable at {url}")
    redis.Redis.from_url(url).flushdb()
    old = (celery_app.conf.broker_url, celery_app.conf.task_always_eager, celery_app.conf.broker_transport_options)
    celery_app.conf.update(broker_url=url, task_always_eager=False, broker_transport_options={})
    celery_app._pool, celery_app.amqp._producer_pool = None, None
    settings.DISPATCH_STALE_S = 1.0
    yield url
    celery_app.conf.update(broker_url=old[0], task_always_eager=old[1], broker_transport_options=old[2])
    celery_app._pool, celery_app.amqp._producer_pool = None, None
    redis.Redis.from_url(url).flushdb()


def worker_env(url: str, data_dir: Path) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "grid.settings",
        "SECRET_KEY": "drill",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": url,
        "SIM_POOLS": TEST_POOLS,
        "SIM_SPEED": "1",
        "SIM_FAILURE_RATE": "0",
        "SIM_SUBMIT_DELAY_S": "0.4",
        "DISPATCH_STALE_S": "1",
        "PORTAL_DATA_DIR": str(data_dir),
        "CELERY_TASK_ALWAYS_EAGER": "false",
    }


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo", "--loglevel=ERROR", "--without-heartbeat"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_during_dispatch_loses_nothing_and_duplicates_nothing(
    broker: str, grid: SimulatorBackend, tmp_path: Path
) -> None:
    team = Team.objects.create(slug="drill", name="Drill")
    user = User.objects.create_user("driller")
    Membership.objects.create(user=user, team=team)
    for i in range(JOBS):
        model = "a100" if i % 5 < 3 else "h100"
        services.submit(user, {"name": f"d{i}", "command": ["x"], "gpu_model": model, "gpus_per_node": 1, "walltime": 3600})
    env = worker_env(broker, tmp_path)
    rng = random.Random(11)
    kills_mid_dispatch = 0
    for _ in range(ROUNDS):
        worker = start_worker(env)
        time.sleep(rng.uniform(3.0, 7.0))  # the worker needs a few seconds to start; kill within its dispatch waves
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        # A kill mid-dispatch leaves a job on the grid that the portal still holds as admitted.
        on_grid = set(SimJob.objects.values_list("portal_job_id", flat=True))
        kills_mid_dispatch += Job.objects.filter(state=JobState.ADMITTED, pk__in=on_grid).exists()
        time.sleep(1.1)
        services.reap_stale()  # as beat would: re-dispatch admitted jobs whose task died with the worker
        tasks.admission_cycle.delay()  # as beat would: the worker admits and dispatches what it admitted

    final = start_worker(env)
    restarted, recovery_s = time.monotonic(), float("inf")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            services.reap_stale()
            services.sync_jobs()
            tasks.admission_cycle.delay()
            if not Job.objects.exclude(state=JobState.RUNNING).exists():
                recovery_s = time.monotonic() - restarted
                break
            time.sleep(1)
    finally:
        final.terminate()
        final.wait(timeout=15)

    states = Counter(Job.objects.values_list("state", flat=True))
    assert states == {JobState.RUNNING: JOBS}, states
    copies = Counter(SimJob.objects.values_list("portal_job_id", flat=True))
    assert len(copies) == JOBS and max(copies.values()) == 1, copies
    admissions = Counter(JobEvent.objects.filter(to_state=JobState.ADMITTED).values_list("job_id", flat=True))
    assert max(admissions.values()) == 1
    print(
        f"drill worker-kill: {ROUNDS} SIGKILLs, {kills_mid_dispatch} landed between a submit and its record; {JOBS} jobs, "
        f"0 lost, 0 twice; every job running {recovery_s:.1f} s after the last worker started"
    )
    print(
        "drill-result "
        + json.dumps({"drill": "worker-kill", "recovery_s": round(recovery_s, 2), "kills_mid_dispatch": kills_mid_dispatch})
    )
