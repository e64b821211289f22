from __future__ import annotations

from typing import Any

from rest_framework import serializers

from cluster.gpus import GPU_MODELS
from cluster.models import Node, NodeEvent, Pool


class PoolSerializer(serializers.ModelSerializer[Pool]):
    shares = serializers.SerializerMethodField(
        help_text="The whole GPU's model when the pool's GPUs are shared; empty otherwise."
    )
    gpu_fraction = serializers.SerializerMethodField(
        help_text="What one of the pool's GPUs is of a whole one (1/7 for a MIG 1g slice)."
    )
    sharing = serializers.SerializerMethodField(help_text="mig, timeslice, or empty for whole GPUs.")

    class Meta:
        model = Pool
        fields = ["name", "kind", "gpu_model", "shares", "gpu_fraction", "sharing"]

    def get_shares(self, pool: Pool) -> str:
        model = GPU_MODELS.get(pool.gpu_model)
        return model.shares if model else ""

    def get_gpu_fraction(self, pool: Pool) -> str:
        model = GPU_MODELS.get(pool.gpu_model)
        return str(model.fraction) if model else "1"

    def get_sharing(self, pool: Pool) -> str:
        model = GPU_MODELS.get(pool.gpu_model)
        return model.sharing if model else ""


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
