"""REST API for artifacts: a job's files, pre-signed upload URLs, a team's retention and usage.

Each view finds its job or team through the model's own visibility rule first (an outsider gets 404),
then asks the service layer, whose errors name the field and the limit.
"""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from artifacts import services
from artifacts.layout import ArtifactInputError
from artifacts.stores import StoreError
from jobs.models import Job
from portal.models import Team


def _job(request: Request, job_id: int) -> Job:
    job = services.visible_job(request.user, job_id)
    if job is None:
        raise NotFound(f"no job #{job_id} that you can see")
    return job


def _unavailable(exc: Exception) -> Response:
    retry = isinstance(exc, StoreError) and exc.retryable
    code = status.HTTP_503_SERVICE_UNAVAILABLE if retry or isinstance(exc, services.NoStore) else status.HTTP_400_BAD_REQUEST
    return Response({"detail": str(exc)}, status=code)


@extend_schema(tags=["artifacts"], responses={200: dict})
@api_view(["GET"])
def job_files(request: Request, job_id: int) -> Response:
    """The job's files (outputs and checkpoints) with their sizes, and where the job writes them."""
    job = _job(request, job_id)
    try:
        files = services.list_files(job)
    except (StoreError, services.NoStore) as exc:
        return _unavailable(exc)
    return Response(
        {
            "job": job.pk,
            "files": [{"path": f.path, "area": f.area, "size": f.size, "modified": f.modified.isoformat()} for f in files],
            "total_bytes": sum(f.size for f in files),
        }
    )


@extend_schema(tags=["artifacts"], request=dict, responses={201: dict})
@api_view(["POST"])
def job_upload(request: Request, job_id: int) -> Response:
    """A pre-signed URL to PUT one file into the job's location: `{"path": "output/model.pt", "size": bytes}`."""
    job = _job(request, job_id)
    body: Any = request.data
    if not isinstance(body, dict):
        raise ValidationError({"non_field_errors": ["expected a JSON object with path and size"]})
    try:
        signed = services.upload_url(request.user, job, body.get("path", ""), body.get("size"))
    except ArtifactInputError as exc:
        raise ValidationError({exc.field: [exc.message]}) from None
    except services.ArtifactForbidden as exc:
        raise PermissionDenied(str(exc)) from None
    except (StoreError, services.NoStore) as exc:
        return _unavailable(exc)
    signed["expires_at"] = signed["expires_at"].isoformat()
    return Response(signed, status=status.HTTP_201_CREATED)


@extend_schema(tags=["artifacts"], request=dict, responses={200: dict})
@api_view(["GET", "PUT"])
def team_artifacts(request: Request, slug: str) -> Response:
    """The team's artifact usage and retention; PUT `{"retention_days": 1-3650 or null}` (its lead or an operator)."""
    team = Team.objects.restrict(request.user).filter(slug=slug).first()
    figure = services.usage(request.user, team) if team is not None else None
    if team is None or figure is None:
        raise NotFound(f"no team {slug!r} that you can see")
    if request.method == "PUT":
        body: Any = request.data
        if not isinstance(body, dict) or "retention_days" not in body:
            raise ValidationError({"retention_days": ["required: a whole number of days from 1 to 3650, or null"]})
        try:
            services.set_retention(request.user, team, body["retention_days"])
        except ArtifactInputError as exc:
            raise ValidationError({exc.field: [exc.message]}) from None
        except services.ArtifactForbidden as exc:
            raise PermissionDenied(str(exc)) from None
        figure = services.usage(request.user, team)
        assert figure is not None
    return Response(
        {
            "team": team.slug,
            "usage_bytes": figure.usage_bytes,
            "usage_files": figure.usage_files,
            "measured_at": figure.measured_at.isoformat() if figure.measured_at else None,
            "retention_days": figure.retention_days,
            "rate_per_gb_month": f"{figure.rate_per_gb_month}" if figure.rate_per_gb_month is not None else None,
            "monthly_cost": f"{figure.monthly_cost}" if figure.monthly_cost is not None else None,
            "month_gb_months": f"{figure.month_gb_months}",
            "month_cost": f"{figure.month_cost}",
        }
    )


# Mounted under /api/v1/ by grid/urls.py, like every app's ROUTES and PATHS.
ROUTES: list[tuple[str, Any, str]] = []
PATHS = [
    path("artifacts/jobs/<int:job_id>/", job_files, name="api_job_artifacts"),
    path("artifacts/jobs/<int:job_id>/uploads/", job_upload, name="api_job_artifact_upload"),
    path("artifacts/teams/<slug:slug>/", team_artifacts, name="api_team_artifacts"),
]
