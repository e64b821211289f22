from django.contrib import admin

from quotas.models import PriorityClass, TeamQuota

admin.site.register(PriorityClass, list_display=["name", "rank", "preemptible", "within_guarantee_only"])
admin.site.register(TeamQuota, list_display=["team", "gpu_model", "guarantee", "limit", "weight", "lendable"])
