"""What-if planning pages, for operators: start a replay, watch its progress, compare the charts."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render

from cluster import services as cluster_services
from jobs import planning
from jobs.models import WhatIfRun
from portal import inputs
from portal.access import is_operator, signed_in


def _operator_only(request: HttpRequest) -> None:
    if not is_operator(request.user):
        raise Http404("No such page")  # planning exposes every team's history: operators only


@login_required
def planning_list(request: HttpRequest) -> HttpResponse:
    _operator_only(request)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            overrides = inputs.parse_json(request.POST.get("quota_overrides") or "{}", "quota_overrides")
            if not isinstance(overrides, dict):
                raise inputs.BadInput("quota_overrides", "must be a JSON object: {team: {guarantee, limit}}")
            run = planning.start(
                signed_in(request),
                request.POST.get("gpu_model", ""),
                inputs.integer(request.POST.get("days"), "days", 1, planning.MAX_DAYS),
                inputs.integer(request.POST.get("add_nodes"), "add_nodes", 0, planning.MAX_ADDED_NODES, default=0),
                overrides,
                trace_csv=_uploaded_trace(request),
                pools=inputs.check_text("pools", request.POST.get("pools", ""), 200),
                class_map=inputs.check_text("class_map", request.POST.get("class_map", ""), 200),
            )
        except inputs.BadInput as exc:
            errors = {exc.field: [exc.message]}
        except planning.PlanningError as exc:
            errors = exc.errors
        else:
            return redirect("planning_detail", run_id=run.pk)
    context = {"runs": WhatIfRun.objects.all()[:20], "models": sorted(cluster_services.capacity_by_model()), "errors": errors}
    return render(request, "jobs/planning_list.html", context)


def _uploaded_trace(request: HttpRequest) -> str:
    """The uploaded trace file as text ("" when none): UTF-8, at most planning.MAX_TRACE_BYTES."""
    upload = request.FILES.get("trace")
    if upload is None:
        return ""
    if upload.size is not None and upload.size > planning.MAX_TRACE_BYTES:
        raise inputs.BadInput("trace", f"is larger than {planning.MAX_TRACE_BYTES:,} bytes")
    try:
        data: bytes = upload.read()
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise inputs.BadInput("trace", "is not UTF-8 text (a CSV file)") from None


@login_required
def planning_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    _operator_only(request)
    run = get_object_or_404(WhatIfRun, pk=run_id)
    charts = planning.charts(run.result) if run.result else None
    return render(request, "jobs/planning_detail.html", {"run": run, "charts": charts})


@login_required
def planning_status(request: HttpRequest, run_id: int) -> JsonResponse:
    _operator_only(request)
    run = get_object_or_404(WhatIfRun, pk=run_id)
    return JsonResponse({"state": run.state, "progress": run.progress, "jobs": run.jobs_replayed, "error": run.error})
