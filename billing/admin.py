"""Admin for billing: a window onto the records, with every change going through the service layer.

Finalised invoices are read-only here (no change, no delete); drafts are deleted and finalised
only through the services; rate cards are added through the service's overlap check.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing import services
from billing.errors import BillingError
from billing.models import Budget, BudgetAlert, BudgetThreshold, Invoice, InvoiceLine, RateCard, TeamRestriction
from billing.services.invoices import delete_draft


class RateCardForm(forms.ModelForm):
    class Meta:
        model = RateCard
        fields = ["gpu_model", "pool_kind", "pool", "valid_from", "valid_until", "per_gpu_hour", "note"]


@admin.register(RateCard)
class RateCardAdmin(admin.ModelAdmin):
    """Cards are added, never edited: a new price is a new card (see the API's rate-cards/change)."""

    form = RateCardForm
    list_display = ["gpu_model", "pool_kind", "pool", "valid_from", "valid_until", "per_gpu_hour"]
    list_filter = ["gpu_model", "pool_kind"]

    def has_change_permission(self, request: HttpRequest, obj: RateCard | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RateCard | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: RateCard, form: Any, change: bool) -> None:
        try:
            card = services.add_rate_card(**{f: getattr(obj, f) for f in RateCardForm.Meta.fields})
        except BillingError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        obj.pk = card.pk


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fk_name = "invoice"
    fields = ("position", "kind", "description", "gpu_model", "pool", "pool_kind", "rate", "gpu_seconds", "amount")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Invoice | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Invoice | None = None) -> bool:
        return False


@admin.action(description="Finalise selected draft invoices")
def finalise_invoices(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
    for invoice in queryset:
        try:
            services.finalise(invoice.pk, request.user.get_username())
        except BillingError as exc:
            modeladmin.message_user(request, f"{invoice.number}: {exc}", messages.ERROR)


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    """Invoices are written by generation only; finalised ones cannot be changed or deleted."""

    list_display = ["team", "month", "state", "total", "currency", "generated_at", "finalised_at"]
    list_filter = ["state", "month"]
    inlines = [InvoiceLineInline]
    actions = [finalise_invoices]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Invoice | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Invoice | None = None) -> bool:
        # Drafts only, and only for staff the admin lets delete invoices at all.
        return obj is not None and not obj.is_finalised and super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Invoice) -> None:
        delete_draft(obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        for invoice in queryset:
            delete_draft(invoice.pk)  # refuses finalised ones, whatever the selection


class ThresholdInline(admin.TabularInline):
    model = BudgetThreshold
    extra = 0
    readonly_fields = ["percent", "action"]
    can_delete = False


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    """Read-only: budgets are set through the API (finance), which checks the thresholds' order."""

    list_display = ["team", "period", "amount", "active"]
    inlines = [ThresholdInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Budget | None = None) -> bool:
        return False


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    list_display = ["team", "period_start", "percent", "kind", "action", "spent", "projected", "created_at"]
    list_filter = ["kind", "action"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BudgetAlert | None = None) -> bool:
        return False


@admin.action(description="Lift selected restrictions")
def lift(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[TeamRestriction]) -> None:
    for restriction in queryset:
        services.lift_restriction(restriction.pk, request.user.get_username())


@admin.register(TeamRestriction)
class TeamRestrictionAdmin(admin.ModelAdmin):
    list_display = ["team", "action", "starts_at", "ends_at", "lifted_at", "lifted_by"]
    actions = [lift]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TeamRestriction | None = None) -> bool:
        return False
