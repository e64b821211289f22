"""Instance types and burst policies are set up in the admin; proposals and events change only through bursting.services."""

from django.contrib import admin

from bursting.models import BurstPolicy, InstanceType


@admin.register(InstanceType)
class InstanceTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "gpu_model", "gpus", "price_per_hour", "pool", "active"]


@admin.register(BurstPolicy)
class BurstPolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "gpu_model", "enabled", "trigger_pending_gpus", "trigger_wait_s", "max_nodes", "auto_approve_below"]
    filter_horizontal = ["instance_types", "allowed_teams"]
    readonly_fields = ["triggered_since"]
