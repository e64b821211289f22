"""Artifact pages: a job's files (also shown on the job page), a file's download, a team's usage and retention."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from artifacts import services
from artifacts.layout import ArtifactInputError
from artifacts.stores import StoreError
from jobs.models import Job
from portal.models import Team


def _visible_job(request: HttpRequest, job_id: int) -> Job:
    job = services.visible_job(request.user, job_id)
    if job is None:
        raise Http404("No such job.")
    return job


@login_required
@require_GET
def job_files(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _visible_job(request, job_id)
    return render(request, "artifacts/job.html", {"job": job, **files_context(job)})


def files_context(job: Job) -> dict[str, object]:
    """What the artifacts list shows: the files, or why there are none."""
    try:
        files = services.list_files(job)
    except (StoreError, services.NoStore) as exc:
        return {"artifact_files": [], "artifact_error": str(exc)}
    return {
        "artifact_files": files,
        "artifact_total": sum(f.size for f in files),
        "artifact_store": services.configured(),
        "artifact_purged_at": services.purged_at(job),
    }


@login_required
@require_GET
def download(request: HttpRequest, job_id: int, path: str) -> HttpResponse | FileResponse:
    """The file, after the job's access check: S3 redirects to a short pre-signed URL, a path store streams it."""
    job = _visible_job(request, job_id)
    try:
        found = services.download(job, path)
    except ArtifactInputError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    except services.NoStore:
        raise Http404("No artifact store.") from None
    except StoreError as exc:
        if exc.retryable:
            return HttpResponse(str(exc), status=503, content_type="text/plain")
        raise Http404("No such file.") from None
    if found.url:
        response: HttpResponse | FileResponse = HttpResponseRedirect(found.url)
    else:
        response = FileResponse(found.stream, as_attachment=True, filename=found.filename)
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def team_artifacts(request: HttpRequest, slug: str) -> HttpResponse:
    team = Team.objects.restrict(request.user).filter(slug=slug).first()
    figure = services.usage(request.user, team) if team is not None else None
    if team is None or figure is None:
        raise Http404("No such team.")
    if request.method == "POST":
        try:
            services.set_retention(request.user, team, request.POST.get("retention_days", "").strip() or None)
        except ArtifactInputError as exc:
            messages.error(request, str(exc))
        except services.ArtifactForbidden as exc:
            return HttpResponse(str(exc), status=403, content_type="text/plain")
        else:
            messages.success(request, "Retention saved.")
        return redirect("team_artifacts", slug=team.slug)
    may_set = services.may_set_retention(request.user, team)
    return render(request, "artifacts/team.html", {"team": team, "usage": figure, "may_set": may_set})
