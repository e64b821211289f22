"""Dashboard, API tokens page and the health endpoint."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from grid import live, teams
from grid.health import run_checks
from jobs.models import Job
from portal import inputs
from portal.access import is_operator, leads_team, signed_in
from portal.models import ApiToken, Team
from portal.tokens import OFFER_REVOKE_ALL
from portal.tokens import revoke as revoke_api_token
from portal.tokens import revoke_all as revoke_all_tokens
from quotas import services as quota_services
from quotas.models import QuotaChange


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    recent = Job.objects.visible_to(request.user).select_related("team", "owner")[:10]
    return render(
        request,
        "portal/dashboard.html",
        {
            "grid": live.grid_snapshot(request.user),
            "charts": live.shared_history.get(),
            "recent": recent,
            "unresolved": live.unresolved_note(request.user),
        },
    )


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Public for load balancers (503 only when this process cannot serve); error details only for operators."""
    result = run_checks()
    if not is_operator(request.user):
        checks = {name: {"ok": c["ok"]} for name, c in result["checks"].items()}
        result = {"ok": result["ok"], "status": result["status"], "failing": result["failing"], "checks": checks}
    return JsonResponse(result, status=503 if result["status"] == "down" else 200)


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    new_key = None
    if request.method == "POST" and request.POST.get("action") == "revoke_all":
        revoked = revoke_all_tokens(signed_in(request))
        request.session.pop(OFFER_REVOKE_ALL, None)
        messages.success(request, f"{revoked} token(s) revoked.")
        return redirect("tokens")
    if request.method == "POST":
        name = request.POST.get("name", "").strip()[:80]
        if not name:
            messages.error(request, "name: give the token a name (at most 80 characters).")
        else:
            _, new_key = ApiToken.issue(signed_in(request), name)
    listed = ApiToken.objects.filter(user=signed_in(request), revoked_at__isnull=True).order_by("-created_at")
    offer = bool(request.session.get(OFFER_REVOKE_ALL)) and listed.exists()
    return render(request, "portal/tokens.html", {"tokens": listed, "new_key": new_key, "offer_revoke_all": offer})


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    if revoke_api_token(signed_in(request), token_id):
        messages.success(request, "Token revoked.")
    return redirect("tokens")


def _rows_for(request: HttpRequest, slug: str | None = None) -> list[teams.TeamModelRow]:
    visible = set(Team.objects.restrict(signed_in(request)).values_list("slug", flat=True))
    return [r for r in teams.overview() if r.team in visible and (slug is None or r.team == slug)]


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    """Quotas, use and lending of the user's teams (operators: every team), as charts and a table."""
    rows = _rows_for(request)
    return render(request, "portal/teams.html", {"rows": rows, "charts": teams.charts(rows)})


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    user = signed_in(request)
    team = Team.objects.restrict(user).filter(slug=slug).first()
    if team is None:
        raise Http404("No such team")
    can_edit = is_operator(user) or leads_team(user, team.pk)
    if request.method == "POST" and can_edit:
        return _change_quota(request, team)
    rows = _rows_for(request, slug)
    members = team.memberships.select_related("user").order_by("user__username")
    changes = QuotaChange.objects.filter(team=team)[:20]
    context = {"team": team, "rows": rows, "charts": teams.charts(rows), "members": members, "changes": changes}
    return render(request, "portal/team.html", {**context, "can_edit": can_edit, "operator": is_operator(user)})


QUOTA_FIELD_MAX = 1_000_000  # GPUs or weight; anything larger is a typo


def _change_quota(request: HttpRequest, team: Team) -> HttpResponse:
    user = signed_in(request)
    model = request.POST.get("gpu_model", "")
    changes: dict[str, int | bool | None] = {"lendable": request.POST.get("lendable") == "on"}
    for name in ("guarantee", "limit", "weight", "lead_max_limit"):
        raw = request.POST.get(name, "").strip()
        if raw != "":
            try:
                changes[name] = inputs.integer(raw, name, 0, QUOTA_FIELD_MAX)
            except inputs.BadInput as exc:  # nothing is changed: one field is unreadable
                messages.error(request, str(exc))
                return redirect("team_detail", slug=team.slug)
    if not is_operator(user):  # a lead's form shows only these; what a lead may change is the service's call
        changes = {k: v for k, v in changes.items() if k in ("limit", "lendable")}
    try:
        quota_services.set_quota(user, team=team, gpu_model=model, changes=changes, reason=request.POST.get("reason", ""))
    except quota_services.QuotaForbidden as exc:
        raise PermissionDenied(str(exc)) from None
    except quota_services.QuotaError as exc:
        for field, problems in exc.errors.items():
            messages.error(request, f"{field}: {' '.join(problems)}")
    else:
        messages.success(request, f"Quota for {team.slug} {model.upper()} saved; it applies from the next admission cycle.")
    return redirect("team_detail", slug=team.slug)
