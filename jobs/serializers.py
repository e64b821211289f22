"""API representations of jobs, their events and templates."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs.models import Job, JobEvent, JobTemplate
from jobs.spec import SUBMIT_FIELDS, SubmitField

# Fields whose representation is the model value itself (DRF's CharField, IntegerField and JSONField give it back
# unchanged for what the model holds); the rest go through their DRF field.
_AS_STORED = (serializers.CharField, serializers.IntegerField, serializers.JSONField)


class _Plan:
    """How to represent each field of a serializer class, worked out once from its DRF fields."""

    def __init__(self, fields: dict[str, serializers.Field[Any, Any, Any, Any]]) -> None:
        self.as_stored: list[tuple[str, str]] = []
        self.related: list[tuple[str, str, str]] = []
        self.converted: list[tuple[str, str, Any]] = []
        self.order = list(fields)
        for name, field in fields.items():
            source = field.source or name
            if isinstance(field, serializers.SlugRelatedField):
                self.related.append((name, source, field.slug_field))
            elif type(field) in _AS_STORED:
                self.as_stored.append((name, source))
            else:
                self.converted.append((name, source, field.to_representation))

    def represent(self, instance: Any) -> dict[str, Any]:
        values: dict[str, Any] = {name: getattr(instance, source) for name, source in self.as_stored}
        for name, source, slug in self.related:
            related = getattr(instance, source)
            values[name] = None if related is None else getattr(related, slug)
        for name, source, convert in self.converted:
            value = getattr(instance, source)
            values[name] = None if value is None else convert(value)
        return {name: values[name] for name in self.order}


class JobSerializer(serializers.ModelSerializer[Job]):
    """A job as the list and the API show it.

    DRF's generic `to_representation` walks every field object for every row (about a third of a
    list request's CPU for 50 rows of 36 fields); this one gives the same output from a plan made
    once per class (tests/jobs/test_list_representation.py compares the two).
    """

    _plans: dict[type[Any], _Plan] = {}

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

    def to_representation(self, instance: Job) -> dict[str, Any]:
        plan = self._plans.get(type(self))
        if plan is None:
            plan = self._plans[type(self)] = _Plan(dict(self.fields))
        return plan.represent(instance)

    @classmethod
    def columns(cls) -> list[str]:
        """The columns this representation reads, for `only()`: of the related rows, just the slug shown."""
        related = {"team": "slug", "owner": "username", "template": "slug"}
        return [name for name in cls.Meta.fields] + [f"{name}__{slug}" for name, slug in related.items()]


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
