"""The reference's one endpoint, `GET /jobs/?before=<id>`: newest first, 50 a page, as the portal's list."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

PAGE = 50
# The portal list's keys, in its order, and where each comes from.
COLUMNS = {
    "id": "j.id", "name": "j.name", "team": "t.slug", "owner": "u.username", "kind": "j.kind", "template": "tp.slug",
    "image": "j.image", "command": "j.command", "env": "j.env", "gpu_model": "j.gpu_model",
    "gpus_per_node": "j.gpus_per_node", "nodes": "j.nodes", "gpus": "j.gpus", "priority": "j.priority",
    "walltime_s": "j.walltime_s", "checkpoint_dir": "j.checkpoint_dir", "array_id": "j.array_id",
    "array_index": "j.array_index", "state": "j.state", "reason": "j.reason", "reason_detail": "j.reason_detail",
    "team_position": "j.team_position", "pool_position": "j.pool_position", "estimated_start": "j.estimated_start",
    "checkpoint_interval_s": "j.checkpoint_interval_s", "last_checkpoint_at": "j.last_checkpoint_at",
    "submitted_at": "j.submitted_at", "admitted_at": "j.admitted_at", "dispatched_at": "j.dispatched_at",
    "started_at": "j.started_at", "finished_at": "j.finished_at", "exit_code": "j.exit_code", "pool": "j.pool",
    "placement": "j.placement", "backend": "j.backend", "backend_job_id": "j.backend_job_id",
}  # fmt: skip
JSON_KEYS = ("command", "env", "placement")
ROWS = (
    f"SELECT {', '.join(COLUMNS.values())} FROM jobs_job j JOIN portal_team t ON t.id = j.team_id"
    " JOIN portal_user u ON u.id = j.owner_id LEFT JOIN jobs_jobtemplate tp ON tp.id = j.template_id"
)
WHO = """
SELECT u.is_operator OR u.is_superuser, ARRAY(SELECT m.team_id FROM portal_membership m WHERE m.user_id = u.id)
FROM portal_apitoken k JOIN portal_user u ON u.id = k.user_id
WHERE k.key_hash = %s AND k.revoked_at IS NULL AND u.is_active
"""


def value(key: str, raw: Any) -> Any:
    if raw is None:
        return None
    if key in JSON_KEYS and isinstance(raw, str):
        return json.loads(raw)
    if isinstance(raw, datetime):
        text = raw.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(raw, UUID):
        return str(raw)
    return raw


def page_rows(cursor: Any, operator: bool, teams: list[int], before: int) -> list[tuple[Any, ...]]:
    """The same SQL as the portal: the primary key for operators; one `(team_id, -id)` arm per team otherwise."""
    if operator:
        cursor.execute(f"{ROWS} WHERE j.id < %s ORDER BY j.id DESC LIMIT %s", [before, PAGE + 1])
        return list(cursor.fetchall())
    if not teams:
        return []
    arm = "SELECT id FROM jobs_job WHERE team_id = %s AND id < %s ORDER BY id DESC LIMIT %s"
    if len(teams) == 1:
        cursor.execute(arm, [teams[0], before, PAGE + 1])
    else:
        cursor.execute(
            " UNION ALL ".join([f"({arm})"] * len(teams)) + " ORDER BY id DESC LIMIT %s",
            [p for team in teams for p in (team, before, PAGE + 1)] + [PAGE + 1],
        )
    ids = [row[0] for row in cursor.fetchall()]
    cursor.execute(f"{ROWS} WHERE j.id = ANY(%s) ORDER BY j.id DESC", [ids])
    return list(cursor.fetchall())


def jobs(request: HttpRequest) -> HttpResponse:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    before = int(request.GET.get("before", 2**62))
    with connection.cursor() as cursor:
        cursor.execute(WHO, [hashlib.sha256(key.encode()).hexdigest()])
        who = cursor.fetchone()
        if scheme != "Token" or who is None:
            return JsonResponse({"detail": "Invalid token."}, status=401)
        rows = page_rows(cursor, who[0], list(who[1]), before)
    keys = list(COLUMNS)
    results = [{k: value(k, raw) for k, raw in zip(keys, row, strict=True)} for row in rows[:PAGE]]
    following = f"/jobs/?before={results[-1]['id']}" if len(rows) > PAGE else None
    return HttpResponse(json.dumps({"next": following, "previous": None, "results": results}), content_type="application/json")


def healthz(request: HttpRequest) -> HttpResponse:
    """What `bench._server.wait_healthy` waits for: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"checks": {"database": {"ok": True}}})


urlpatterns = [path("jobs/", jobs), path("healthz", healthz)]
