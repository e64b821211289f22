"""A real Celery worker on Redis admits and dispatches a submitted job, and its state changes
reach a websocket group through the Redis channel layer in another process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from pytest_django import Settings

from cluster.simulator.backend import SimulatorBackend
from jobs import services, tasks
from jobs.models import Job
from jobs.states import JobState
from portal.celery import app as celery_app
from portal.models import User
from tests.conftest import TEST_POOLS
from tests.services import redis_reachable, redis_url

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def forget_connections() -> None:
    """Drop Celery's cached broker connections so the next publish uses the broker now configured."""
    # Forget, don't close: other threads may still hold the old pool, and closing it under them fails.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def redis_broker(settings: Settings) -> Iterator[str]:
    url = redis_url()
    if not redis_reachable(url):
        pytest.skip(f"Redis is not reachable at {url} (start redis-server, or run scripts/test)")
    redis.Redis.from_url(url).flushdb()
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}}
    settings.CELERY_TASK_ALWAYS_EAGER = False
    old = (celery_app.conf.broker_url, celery_app.conf.task_always_eager, celery_app.conf.broker_transport_options)
    celery_app.conf.update(broker_url=url, task_always_eager=False, broker_transport_options={})
    forget_connections()
    yield url
    celery_app.conf.update(broker_url=old[0], task_always_eager=old[1], broker_transport_options=old[2])
    forget_connections()
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def worker(redis_broker: str, grid: SimulatorBackend, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "grid.settings",
        "SECRET_KEY": "worker-test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": redis_broker,
        "SIM_POOLS": TEST_POOLS,
        "SIM_SPEED": "1",
        "SIM_FAILURE_RATE": "0",
        "PORTAL_DATA_DIR": str(tmp_path),
        "CELERY_TASK_ALWAYS_EAGER": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo", "--loglevel=WARNING", "--without-heartbeat"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_worker_on_redis_admits_and_dispatches_and_broadcasts(worker: subprocess.Popen[bytes], alice: User) -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    job = services.submit(
        alice, {"name": "via-redis", "command": ["x"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": 600}
    )[0]
    async_to_sync(layer.group_add)(f"job.{job.pk}", channel)

    dispatched = wait_for(lambda: Job.objects.get(pk=job.pk).state == JobState.DISPATCHED)
    assert isinstance(worker.stdout, io.BufferedReader)  # stdout=PIPE
    assert dispatched, f"job stayed {Job.objects.get(pk=job.pk).state}; worker said: {worker.stdout.read1(4000)!r}"
    message = async_to_sync(layer.receive)(channel)
    assert message == {"type": "job.changed", "job": job.pk}

    tasks.sync_backend.delay()
    assert wait_for(lambda: Job.objects.get(pk=job.pk).state == JobState.RUNNING)
