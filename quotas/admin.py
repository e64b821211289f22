from typing import Any

from django import forms
from django.contrib import admin

from portal.admin import ReadOnlyAdmin
from quotas import services
from quotas.models import DepartmentQuota, PriorityClass, QuotaChange, TeamQuota

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


class DepartmentQuotaForm(forms.ModelForm):
    class Meta:
        model = DepartmentQuota
        fields = ["department", "gpu_model", "guarantee"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors:
            for field, messages in services.department_quota_errors(
                data["department"], data["gpu_model"], data["guarantee"]
            ).items():
                for message in messages:
                    self.add_error(field, message)
        return data


@admin.register(DepartmentQuota)
class DepartmentQuotaAdmin(admin.ModelAdmin):
    """Checked by quotas.services.department_quota_errors: it must cover its teams' guarantees."""

    form = DepartmentQuotaForm
    list_display = ["department", "gpu_model", "guarantee"]

    def save_model(self, request: Any, obj: DepartmentQuota, form: Any, change: bool) -> None:
        saved = services.set_department_quota(
            request.user, department=obj.department, gpu_model=obj.gpu_model, guarantee=obj.guarantee
        )
        obj.pk = saved.pk
