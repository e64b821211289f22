"""REST API for jobs and templates: thin viewsets over jobs.services."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from jobs import services
from jobs.listing import JobCursorPagination
from jobs.models import Job, JobTemplate
from jobs.serializers import (
    ArrayCreatedSerializer,
    CancelSerializer,
    JobDetailSerializer,
    JobEventSerializer,
    JobSerializer,
    JobSubmitSerializer,
    JobTemplateSerializer,
    LogSerializer,
)
from jobs.spec import SpecError
from jobs.states import JobState
from portal.serializers import represent

MAX_LOG_LINES = 1000


def filter_jobs(jobs: QuerySet[Job], params: Any, user: Any) -> QuerySet[Job]:
    """The filters the job list offers, shared by the API and the page."""
    if state := params.get("state"):
        if state not in JobState.values:
            raise exceptions.ValidationError({"state": f"must be one of {', '.join(JobState.values)}"})
        jobs = jobs.filter(state=state)
    if team := params.get("team"):
        jobs = jobs.filter(team__slug=team)
    if params.get("mine") in ("1", "true"):
        jobs = jobs.filter(owner_id=user.pk)
    if q := (params.get("q") or "").strip():
        jobs = jobs.filter(name__icontains=q[:100])
    if array_id := params.get("array_id"):
        try:
            jobs = jobs.filter(array_id=uuid.UUID(str(array_id)))
        except ValueError:
            raise exceptions.ValidationError({"array_id": ["must be an array id (a UUID)"]}) from None
    return jobs


@extend_schema(tags=["jobs"])
class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Job]):
    serializer_class = JobSerializer
    pagination_class = JobCursorPagination

    def get_queryset(self) -> QuerySet[Job]:
        jobs: QuerySet[Job] = Job.objects.visible_to(self.request.user).select_related("team", "owner", "template")
        if self.action == "list":
            # Only what the list shows: not the script, nor the owner's password hash.
            jobs = filter_jobs(jobs.only(*JobSerializer.columns()), self.request.query_params, self.request.user)
        return jobs

    def get_serializer_class(self) -> type[serializers.BaseSerializer[Any]]:
        return JobDetailSerializer if self.action == "retrieve" else JobSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, description="Only jobs in this state."),
            OpenApiParameter("team", str, description="Only this team's jobs (slug)."),
            OpenApiParameter("q", str, description="Name contains this text."),
            OpenApiParameter("mine", bool, description="Only my jobs."),
            OpenApiParameter("array_id", str, description="Only elements of this array."),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(JobDetailSerializer(self.get_object()).data)

    @extend_schema(
        request=JobSubmitSerializer,
        responses={201: JobDetailSerializer, 202: ArrayCreatedSerializer, 400: OpenApiResponse(description="Field errors")},
        description="Submit a job, or a job array with `array`. Errors name the field and the limit.",
    )
    def create(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["expected a JSON object"]})
        try:
            created = services.submit_request(request.user, dict(request.data))
        except SpecError as exc:
            raise exceptions.ValidationError(exc.errors) from None
        if created.job is None:
            body = {"array_id": created.array_id, "count": len(created.job_ids), "ids": created.job_ids}
            return Response(represent(ArrayCreatedSerializer, body), status=status.HTTP_201_CREATED)
        # The created job comes back with its team, owner and template attached: no read-back.
        return Response(represent(JobDetailSerializer, created.job), status=status.HTTP_201_CREATED)

    @extend_schema(request=CancelSerializer, responses={200: JobDetailSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            job = services.cancel(request.user, job, body.validated_data.get("reason", ""))
        except services.JobForbidden as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        except services.JobActionError as exc:
            raise exceptions.ValidationError({"state": [str(exc)]}) from None
        return Response(JobDetailSerializer(job).data)

    @extend_schema(responses={200: JobEventSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        return Response(JobEventSerializer(job.events.all(), many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter("offset", int, description="First line to return (0-based).")],
        responses={200: LogSerializer},
    )
    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        try:
            offset = max(0, int(request.query_params.get("offset", 0)))
        except ValueError:
            raise exceptions.ValidationError({"offset": ["must be a whole number"]}) from None
        lines = services.read_log(job, offset, MAX_LOG_LINES)
        return Response({"offset": offset, "lines": lines})


@extend_schema(tags=["templates"])
class JobTemplateViewSet(viewsets.ReadOnlyModelViewSet[JobTemplate]):
    serializer_class = JobTemplateSerializer
    queryset = JobTemplate.objects.all()
    lookup_field = "slug"
    pagination_class = None


# Mounted under /api/v1/ by grid/urls.py, like every app's ROUTES and PATHS.
ROUTES = [("jobs", JobViewSet, "job"), ("templates", JobTemplateViewSet, "template")]
