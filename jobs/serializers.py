"""API representations of jobs, their events and templates."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs.models import Job, JobEvent, JobTemplate
from jobs.spec import SUBMIT_FIELDS, SubmitField


class JobSerializer(serializers.ModelSerializer[Job]):
    team: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    owner: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="username", read_only=True)
    template: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, allow_null=True, help_text="null: submitted without a template"
    )

    class Meta:
        model = Job
        fields = [
            "id", "name", "team", "owner", "kind", "template", "image", "command", "env", "gpu_model",
            "gpus_per_node", "nodes", "gpus", "priority", "walltime_s", "checkpoint_dir", "array_id",
            "array_index", "state", "reason", "reason_detail", "team_position", "pool_position", "estimated_start",
            "checkpoint_interval_s", "last_checkpoint_at", "submitted_at", "admitted_at",
            "dispatched_at", "started_at", "finished_at", "exit_code", "pool", "placement", "backend",
            "backend_job_id",
        ]  # fmt: skip
        read_only_fields = fields


class JobDetailSerializer(JobSerializer):
    script = serializers.CharField(read_only=True)

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "script"]
        read_only_fields = fields


def _submit_field(declared: SubmitField) -> serializers.Field[Any, Any, Any, Any]:
    common: dict[str, Any] = {"required": declared.required, "help_text": declared.help}
    if declared.choices:
        return serializers.ChoiceField(choices=list(declared.choices), **common)
    if declared.kind == "integer":
        return serializers.IntegerField(min_value=declared.minimum, max_value=declared.maximum, **common)
    if declared.kind == "string-list":
        return serializers.ListField(child=serializers.CharField(), **common)
    if declared.kind == "string-map":
        return serializers.DictField(child=serializers.CharField(), **common)
    if declared.kind == "map":
        return serializers.DictField(**common)
    return serializers.CharField(**common)


class JobSubmitSerializer(serializers.Serializer[dict[str, Any]]):
    """Documents the submission body, field for field from jobs.spec.SUBMIT_FIELDS; jobs.spec.validate checks it."""

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        return {name: _submit_field(declared) for name, declared in SUBMIT_FIELDS.items()}


class ArrayCreatedSerializer(serializers.Serializer[dict[str, Any]]):
    array_id = serializers.UUIDField()
    count = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.IntegerField())


class JobEventSerializer(serializers.ModelSerializer[JobEvent]):
    class Meta:
        model = JobEvent
        fields = ["at", "from_state", "to_state", "actor", "reason"]


class JobTemplateSerializer(serializers.ModelSerializer[JobTemplate]):
    class Meta:
        model = JobTemplate
        fields = [
            "slug", "name", "kind", "description", "image", "command", "params", "gpu_model", "gpus_per_node",
            "nodes", "walltime_s", "max_gpus_per_node", "max_nodes", "max_walltime_s", "allowed_gpu_models",
            "checkpoint_dir",
        ]  # fmt: skip


class CancelSerializer(serializers.Serializer[dict[str, Any]]):
    reason = serializers.CharField(required=False, max_length=300, allow_blank=True)


class LogSerializer(serializers.Serializer[dict[str, Any]]):
    offset = serializers.IntegerField()
    lines = serializers.ListField(child=serializers.CharField())
