from django.contrib import admin

from cluster.models import Node, NodeEvent, Pool
from portal.admin import ReadOnlyAdmin

admin.site.register(Pool, list_display=["name", "kind", "gpu_model"])


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    """Read-only: drain, cordon and resume go through the operator console, which records a NodeEvent."""

    list_display = ["name", "pool", "gpu_model", "gpus", "gpus_used", "state", "reason"]
    list_filter = ["state", "pool"]


@admin.register(NodeEvent)
class NodeEventAdmin(ReadOnlyAdmin):
    """The node audit trail: append-only."""

    list_display = ["at", "node", "from_state", "to_state", "actor", "reason"]
