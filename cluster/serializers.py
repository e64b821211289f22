from __future__ import annotations

from typing import Any

from rest_framework import serializers

from cluster.models import Node, NodeEvent, Pool


class PoolSerializer(serializers.ModelSerializer[Pool]):
    class Meta:
        model = Pool
        fields = ["name", "kind", "gpu_model"]


class NodeSerializer(serializers.ModelSerializer[Node]):
    pool: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Node
        fields = ["name", "pool", "gpu_model", "gpus", "gpus_used", "state", "reason", "updated_at"]


class NodeEventSerializer(serializers.ModelSerializer[NodeEvent]):
    class Meta:
        model = NodeEvent
        fields = ["at", "from_state", "to_state", "actor", "reason", "drain_report"]


class DrainedNodeSerializer(NodeSerializer):
    """A node after a drain, with what the drain did (pods evicted, pods a disruption budget kept)."""

    drain_report = serializers.JSONField(
        read_only=True, allow_null=True, help_text="{evicted: [pod], blocked: {pod: why}, skipped: [pod]}"
    )

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "drain_report"]


class NodeActionSerializer(serializers.Serializer[dict[str, Any]]):
    reason = serializers.CharField(max_length=255, allow_blank=True, required=False, default="")
