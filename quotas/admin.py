from django.contrib import admin

from portal.admin import ReadOnlyAdmin
from quotas.models import PriorityClass, QuotaChange, TeamQuota

admin.site.register(
    PriorityClass, list_display=["name", "rank", "preemptible", "within_guarantee_only"], filter_horizontal=["teams"]
)


@admin.register(TeamQuota)
class TeamQuotaAdmin(ReadOnlyAdmin):
    """Read-only: a quota changes through quotas.services.set_quota (team pages, the API), which audits it."""

    list_display = ["team", "gpu_model", "guarantee", "limit", "weight", "lendable"]


@admin.register(QuotaChange)
class QuotaChangeAdmin(ReadOnlyAdmin):
    list_display = ["at", "team", "gpu_model", "actor", "reason"]
