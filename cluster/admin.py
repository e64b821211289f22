from django.contrib import admin

from cluster.models import Node, NodeEvent, Pool

admin.site.register(Pool, list_display=["name", "kind", "gpu_model"])
admin.site.register(
    Node, list_display=["name", "pool", "gpu_model", "gpus", "gpus_used", "state", "reason"], list_filter=["state", "pool"]
)


@admin.register(NodeEvent)
class NodeEventAdmin(admin.ModelAdmin):
    list_display = ["at", "node", "from_state", "to_state", "actor", "reason"]

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # the audit trail is append-only

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
