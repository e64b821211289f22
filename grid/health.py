"""Checks behind /healthz: database, broker, worker heartbeat and cluster backend.

Only the database is critical: without it this process cannot serve, so /healthz answers 503 and
a load balancer should stop sending it traffic. A broker, worker or backend outage is shared by
every replica, and the portal keeps serving through it (pages, API, submissions saved for the
periodic cycles), so /healthz then answers 200 with `status: degraded` and says what is down.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from cluster.backends import get_backend
from cluster.backends.base import BackendError
from portal.loops import lag_s
from portal.models import ControlLoop, Heartbeat


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True, "vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        return {"ok": True, "kind": "redis"}
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    return {"ok": True, "kind": "filesystem", "queued": sum(1 for _ in folder.iterdir())}


def check_worker() -> dict[str, Any]:
    beat = Heartbeat.objects.filter(name="worker").first()
    if beat is None:
        return {"ok": False, "error": "no worker has reported yet"}
    age = (timezone.now() - beat.at).total_seconds()
    limit = timedelta(seconds=settings.GRID_CYCLE_S * 5 + 10).total_seconds()
    return {"ok": age <= limit, "last_seen_s": round(age, 1), **({} if age <= limit else {"error": "worker is silent"})}


def check_backend() -> dict[str, Any]:
    return get_backend().health()


LOOP_LAG_PERIODS = 3  # a loop more than this many periods behind makes the portal degraded (the alert fires at the same point)


def check_loops() -> dict[str, Any]:
    """Every control loop that has run: its last duration and lag; failing when one is far behind."""
    now = timezone.now()
    loops: dict[str, dict[str, Any]] = {}
    behind: list[str] = []
    for loop in ControlLoop.objects.order_by("name"):  # one read: lag and "behind" from the same rows
        lag = lag_s(loop, now)
        loops[loop.name] = {"duration_s": round(loop.last_duration_s, 3), "lag_s": round(lag, 1), "failures": loop.failures}
        if lag > LOOP_LAG_PERIODS * loop.period_s + 10:
            behind.append(loop.name)
    return {"ok": not behind, "loops": loops, **({"error": f"behind: {', '.join(behind)}"} if behind else {})}


CHECKS = {
    "database": check_database,
    "broker": check_broker,
    "worker": check_worker,
    "backend": check_backend,
    "loops": check_loops,
}
CRITICAL = frozenset({"database"})


def run_checks() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except (BackendError, redis.RedisError, OSError, Exception) as exc:  # noqa: BLE001 - report, never crash
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    failing = sorted(name for name, r in results.items() if not r.get("ok"))
    status = "down" if CRITICAL & set(failing) else "degraded" if failing else "ok"
    return {"ok": not failing, "status": status, "failing": failing, "checks": results}
