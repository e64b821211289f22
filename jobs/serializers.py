"""API representations of jobs, their events and templates."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs.models import Job, JobEvent, JobTemplate


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


class JobSubmitSerializer(serializers.Serializer[dict[str, Any]]):
    """Documents the submission body; validation itself is jobs.spec.validate."""

    team = serializers.CharField(required=False, help_text="Team slug; optional if you are in one team.")
    template = serializers.CharField(required=False, help_text="Template slug, e.g. pytorch-ddp.")
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["training", "rendering", "simulation", "custom"], required=False)
    image = serializers.CharField(required=False)
    command = serializers.ListField(child=serializers.CharField(), required=False, help_text="Argument list; no shell.")
    script = serializers.CharField(required=False, help_text="Batch script text (bounded size).")
    env = serializers.DictField(child=serializers.CharField(), required=False)
    params = serializers.DictField(required=False, help_text="Values for the template's placeholders.")
    gpu_model = serializers.CharField(required=False)
    gpus_per_node = serializers.IntegerField(required=False, min_value=1)
    nodes = serializers.IntegerField(required=False, min_value=1)
    gpus = serializers.IntegerField(required=False, min_value=1, help_text="Total GPUs; split into whole nodes.")
    priority = serializers.CharField(required=False)
    walltime = serializers.CharField(required=False, help_text="Seconds, HH:MM:SS or D-HH:MM:SS.")
    checkpoint_dir = serializers.CharField(required=False)
    checkpoint_interval = serializers.IntegerField(
        required=False, help_text="Seconds between the job's checkpoints (60-86400); preemption prefers jobs that lose least."
    )
    array = serializers.CharField(required=False, help_text="Element count, or a range like 0-99 or 0-99:2.")


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
