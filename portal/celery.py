"""The Celery application; tasks live in each app's tasks.py and the beat schedule in settings."""

import functools
import os
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grid.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class PromptConsumer(Consumer):
    """A worker consumer that retries a lost broker every BROKER_RETRY_S seconds, for ever.

    Celery's own backs off 2, 4, 6 … 30 s, so after a minute-long Redis outage a worker would idle
    for up to 30 s more with the broker already back (and give up after 100 tries). The admission
    cycle, sync and reaper all arrive through the broker, so the grid waits for exactly that long.
    """

    def ensure_connected(self, conn: Any) -> Any:
        every = float(self.app.conf.get("broker_retry_s", 1.0))
        plain = conn.ensure_connection
        conn.ensure_connection = functools.partial(plain, interval_start=0, interval_step=every, interval_max=every)
        try:
            return super().ensure_connected(conn)
        finally:
            conn.ensure_connection = plain
