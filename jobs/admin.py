from django.contrib import admin
from django.http import HttpRequest

from jobs.models import Job, JobEvent, JobTemplate


@admin.register(JobTemplate)
class JobTemplateAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "kind", "gpu_model", "gpus_per_node", "max_gpus_per_node", "max_nodes", "max_walltime_s"]


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "from_state", "to_state", "actor", "reason"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Read-only: jobs change state only through the service layer, never by editing rows."""

    list_display = ["id", "name", "team", "owner", "gpus", "gpu_model", "state", "submitted_at"]
    list_filter = ["state", "gpu_model", "team"]
    search_fields = ["name"]
    inlines = [JobEventInline]

    def has_change_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
