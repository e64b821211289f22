"""POST /api/v1/jobs/ (the portal's path and body) and GET /health."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework import generics, serializers

from bench.submit_reference.models import Job, Team


class MemberTeam(serializers.SlugRelatedField[Team]):
    def get_queryset(self) -> QuerySet[Team]:
        teams: QuerySet[Team] = Team.objects.filter(memberships__user=self.context["request"].user)
        return teams


class JobSerializer(serializers.ModelSerializer[Job]):
    team = MemberTeam(slug_field="slug")
    gpu_model = serializers.ChoiceField(choices=["a100", "h100", "l4", "a10g", "v100"])
    gpus_per_node = serializers.IntegerField(min_value=1, max_value=8)
    walltime = serializers.IntegerField(min_value=60, max_value=7 * 86400)
    command = serializers.ListField(child=serializers.CharField(max_length=4096), min_length=1, max_length=256)

    class Meta:
        model = Job
        fields = ["id", "team", "owner", "name", "command", "gpu_model", "gpus_per_node", "walltime", "state", "created_at"]
        read_only_fields = ["id", "owner", "state", "created_at"]


class Submit(generics.CreateAPIView[Job]):
    serializer_class = JobSerializer

    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():
            serializer.save(owner=self.request.user)


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("api/v1/jobs/", Submit.as_view()), path("health", health)]
