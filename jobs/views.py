"""Job pages: list, choose a template, submit, detail (live), cancel."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from rest_framework.exceptions import ValidationError

from cluster import services as cluster_services
from jobs import live, services
from jobs.api import filter_jobs
from jobs.forms import JobForm
from jobs.listing import JobPaginator, list_team_ids
from jobs.models import Job, JobTemplate
from jobs.spec import SpecError
from jobs.states import JobState
from portal.access import signed_in
from portal.models import Team
from quotas.models import PriorityClass

PAGE_SIZE = 25


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    jobs: QuerySet[Job] = Job.objects.visible_to(request.user).select_related("team", "owner")
    try:
        jobs = filter_jobs(jobs, request.GET, request.user)
    except ValidationError:
        jobs = jobs.none()
        messages.error(request, "Unknown state filter.")
    page = JobPaginator(jobs, PAGE_SIZE, list_team_ids(request.user, request.GET)).get_page(request.GET.get("page"))
    for listed in page:
        listed.start_range = live.start_range(listed.estimated_start) if listed.estimated_start else None  # type: ignore[attr-defined]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "jobs/list.html",
        {"page": page, "states": JobState.choices, "filters": request.GET, "query": query.urlencode()},
    )


@login_required
def job_new(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/new.html", {"templates": JobTemplate.objects.all()})


@login_required
def job_submit(request: HttpRequest, slug: str) -> HttpResponse:
    template = get_object_or_404(JobTemplate, slug=slug)
    teams = list(Team.objects.filter(memberships__user=signed_in(request)).values_list("slug", "name"))
    if not teams:
        messages.error(request, "You are not in any team yet; ask a team lead to add you.")
        return redirect("job_list")
    gpu_models = sorted(cluster_services.capacity_by_model())
    priorities = list(PriorityClass.objects.order_by("-rank").values_list("name", flat=True))

    def make_form(data: Any = None, initial: dict[str, Any] | None = None) -> JobForm:
        return JobForm(data, initial=initial, template=template, teams=teams, gpu_models=gpu_models, priorities=priorities)

    if request.method == "POST":
        form = make_form(request.POST)
        if form.is_valid():
            try:
                created = services.submit_request(request.user, form.as_request())
            except SpecError as exc:
                for field, problems in exc.errors.items():
                    target = field if field in form.fields else None
                    for problem in problems:
                        form.add_error(target, f"{field}: {problem}" if target is None else problem)
            else:
                if len(created.job_ids) > 1:
                    messages.success(request, f"Submitted an array of {len(created.job_ids)} jobs.")
                    return redirect(f"/jobs/?array_id={created.array_id}")
                return redirect("job_detail", job_id=created.job_ids[0])
    else:
        form = make_form(initial=JobForm.initial_for(template, teams[0][0]))
    return render(request, "jobs/submit.html", {"form": form, "template": template})


def _visible_job(request: HttpRequest, job_id: int) -> Job:
    job = Job.objects.visible_to(request.user).select_related("team", "owner", "template").filter(pk=job_id).first()
    if job is None:
        raise Http404("No such job")
    return job


@login_required
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _visible_job(request, job_id)
    snapshot = live.snapshot(job)
    return render(
        request,
        "jobs/detail.html",
        {
            "job": job,
            "snapshot": snapshot,
            "can_cancel": services.can_cancel(request.user, job),
            "start_range": live.start_range(job.estimated_start) if job.estimated_start else None,
        },
    )


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _visible_job(request, job_id)
    try:
        services.cancel(request.user, job, request.POST.get("reason", "")[:300])
    except services.JobForbidden as exc:
        return HttpResponse(str(exc), status=403)
    except services.JobActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Job #{job.pk} cancelled.")
    return redirect("job_detail", job_id=job.pk)
