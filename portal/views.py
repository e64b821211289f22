"""Dashboard, API tokens page and the health endpoint."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from jobs.models import Job
from portal import live
from portal.access import is_operator, signed_in
from portal.health import run_checks
from portal.models import ApiToken


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    recent = Job.objects.visible_to(request.user).select_related("team", "owner")[:10]
    return render(
        request,
        "portal/dashboard.html",
        {"grid": live.grid_snapshot(request.user), "charts": live.history_charts(), "recent": recent},
    )


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Public for load balancers; error details (hosts, ports) only for operators."""
    result = run_checks()
    if not is_operator(request.user):
        result = {"ok": result["ok"], "checks": {name: {"ok": c["ok"]} for name, c in result["checks"].items()}}
    return JsonResponse(result, status=200 if result["ok"] else 503)


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    new_key = None
    if request.method == "POST":
        name = request.POST.get("name", "").strip()[:80]
        if not name:
            messages.error(request, "name: give the token a name (at most 80 characters).")
        else:
            _, new_key = ApiToken.issue(signed_in(request), name)
    listed = ApiToken.objects.filter(user=signed_in(request), revoked_at__isnull=True).order_by("-created_at")
    return render(request, "portal/tokens.html", {"tokens": listed, "new_key": new_key})


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    revoked = ApiToken.objects.filter(pk=token_id, user=signed_in(request), revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked:
        messages.success(request, "Token revoked.")
    return redirect("tokens")
