"""Liveness: the process answers. Readiness, with its real dependencies, is /healthz (grid.health).

An orchestrator restarts a process whose /livez fails, and stops routing to one whose /healthz
fails; keeping them apart means a database outage takes the portal out of rotation without
restarting every web process in a loop.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@never_cache
@require_GET
def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})
