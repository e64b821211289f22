"""Instance types and burst policies are set up in the admin (policies also in the operator console);
proposals and events change only through bursting.services. Both forms refuse a pool that cannot burst."""

from typing import Any

from django import forms
from django.contrib import admin

from bursting.models import BurstPolicy, InstanceType
from bursting.services import pool_problem


class InstanceTypeForm(forms.ModelForm):
    class Meta:
        model = InstanceType
        fields = ["name", "gpu_model", "gpus", "price_per_hour", "pool", "active"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors and (
            problem := pool_problem(InstanceType(**{k: data[k] for k in ("name", "gpu_model", "gpus", "pool")}))
        ):
            self.add_error("pool", problem)
        return data


class BurstPolicyForm(forms.ModelForm):
    class Meta:
        model = BurstPolicy
        fields = [
            "name", "gpu_model", "enabled", "instance_types", "trigger_pending_gpus", "trigger_wait_s", "trigger_window_s",
            "min_nodes", "max_nodes", "max_duration_s", "idle_release_s", "proposal_ttl_s", "auto_approve_below",
            "allowed_teams",
        ]  # fmt: skip

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for t in data.get("instance_types") or []:
            if t.gpu_model != data.get("gpu_model"):
                self.add_error("instance_types", f"{t.name} has {t.gpu_model} GPUs, not {data.get('gpu_model')}")
            elif problem := pool_problem(t):
                self.add_error("instance_types", f"pool: {problem}")
        return data


@admin.register(InstanceType)
class InstanceTypeAdmin(admin.ModelAdmin):
    form = InstanceTypeForm
    list_display = ["name", "gpu_model", "gpus", "price_per_hour", "pool", "active"]


@admin.register(BurstPolicy)
class BurstPolicyAdmin(admin.ModelAdmin):
    form = BurstPolicyForm
    list_display = ["name", "gpu_model", "enabled", "trigger_pending_gpus", "trigger_wait_s", "max_nodes", "auto_approve_below"]
    filter_horizontal = ["instance_types", "allowed_teams"]
    readonly_fields = ["triggered_since"]
