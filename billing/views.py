"""Billing pages: finance's month report, a team's costs and budget, invoices and their exports."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from billing import charts, exports, services
from billing.access import billing_teams, require_billing, require_finance
from billing.errors import BillingError
from billing.forms import RateCardForm, StorageRateForm
from billing.metering import month_of
from billing.models import Budget, BudgetAlert, Invoice, Notification, RateCard, StorageRateCard, UsageRecord
from billing.services import notify
from billing.services.budgets import restrictions_of
from billing.services.invoices import currency, invoice_rows
from billing.services.reports import monthly_cost_by, months_back, summary, trend
from portal import inputs
from portal.access import is_finance, signed_in

TREND_MONTHS = 12


def last_month() -> date:
    return services.previous_month(timezone.now())


def picker_months(now_month: date) -> list[date]:
    """Newest first: the current month and the 23 before it, and any other month that has usage."""
    recent = set(months_back(now_month, 24))
    used = set(UsageRecord.objects.order_by().values_list("month", flat=True).distinct())
    return sorted(recent | used, reverse=True)


def visible_invoice(request: HttpRequest, invoice_id: int) -> Invoice:
    require_billing(request.user)
    return get_object_or_404(Invoice.objects.visible_to(request.user).select_related("team"), pk=invoice_id)


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """Finance: every team for a month with charts. A team lead: their team's page."""
    require_billing(request.user)
    if not is_finance(request.user):
        return redirect("billing_team", slug=billing_teams(request.user).order_by("slug").first().slug)  # type: ignore[union-attr]
    month = inputs.month(request.GET.get("month"), default=last_month())
    report = summary(month)
    code = currency()
    months = months_back(month, TREND_MONTHS)
    figures = {
        "trend": charts.monthly_trend_figure("Month over month, by team", code, trend(months), months),
        "models": charts.cost_bar_figure(f"Cost by GPU model, {month:%Y-%m}", code, report["by_gpu_model"]),
        "kinds": charts.pool_kind_figure(f"On-premises versus cloud, {month:%Y-%m}", report["by_pool_kind"]),
        "top": charts.cost_bar_figure("Top spenders", code, dict(report["top_spenders"]), horizontal=True),
        "departments": charts.cost_bar_figure(f"Cost by department, {month:%Y-%m}", code, report["by_department"]),
    }
    context = {
        "report": report,
        "month": month,
        "currency": code,
        "charts": figures,
        "months": picker_months(month_of(timezone.now())),
        "rate_cards": RateCard.objects.order_by("gpu_model", "pool_kind", "pool", "-valid_from")[:50],
        "rate_form": RateCardForm(initial={"valid_from": month}),
        "storage_rates": StorageRateCard.objects.order_by("-valid_from")[:20],
        "storage_form": StorageRateForm(initial={"valid_from": month}),
    }
    return render(request, "billing/overview.html", {**context, "notifications": _unread(request)})


@login_required
@require_GET
def team_page(request: HttpRequest, slug: str) -> HttpResponse:
    require_billing(request.user)
    team = get_object_or_404(billing_teams(request.user), slug=slug)
    code, now = currency(), timezone.now()
    months = months_back(month_of(now), TREND_MONTHS)
    series = monthly_cost_by("gpu_model", months, [team.pk])
    figures: dict[str, Any] = {"trend": charts.monthly_trend_figure("Monthly cost by GPU model", code, series, months)}
    budgets = []
    for budget in Budget.objects.filter(team=team, active=True).prefetch_related("thresholds"):
        state = services.status(budget, now)
        percents = [Decimal(t.percent) for t in budget.thresholds.all()]
        figures[f"budget-{budget.pk}"] = charts.budget_figure(
            f"{budget.get_period_display()} budget", code, Decimal(budget.amount), state.spent, state.projected, percents
        )
        budgets.append({"budget": budget, "status": state, "chart": f"budget-{budget.pk}"})
    context = {
        "team": team, "currency": code, "charts": figures, "budgets": budgets,
        "invoices": Invoice.objects.filter(team=team).order_by("-month")[:24],
        "alerts": BudgetAlert.objects.filter(team=team)[:20], "restrictions": restrictions_of(team.pk, now),
        "notifications": _unread(request),
    }  # fmt: skip
    return render(request, "billing/team.html", context)


def _unread(request: HttpRequest) -> list[Notification]:
    return list(Notification.objects.filter(recipient=signed_in(request), read_at__isnull=True)[:10])


@login_required
@require_GET
def invoice_detail(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice = visible_invoice(request, invoice_id)
    context = {
        "invoice": invoice,
        "rows": invoice_rows(invoice),
        "may_finalise": is_finance(request.user) and not invoice.is_finalised,
    }
    return render(request, "billing/invoice.html", context)


@login_required
@require_GET
def invoice_csv(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice = visible_invoice(request, invoice_id)
    response = HttpResponse(exports.csv_text([invoice]), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{invoice.number}.csv"'
    return response


@login_required
@require_GET
def invoice_pdf(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice = visible_invoice(request, invoice_id)
    response = HttpResponse(exports.pdf_bytes(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{invoice.number}.pdf"'
    return response


@login_required
@require_GET
def month_csv(request: HttpRequest, month: str) -> HttpResponse:
    require_finance(request.user)
    first = inputs.month(month)
    invoices = list(Invoice.objects.filter(month=first).select_related("team").order_by("team__slug"))
    response = HttpResponse(exports.csv_text(invoices), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="invoices-{first:%Y-%m}.csv"'
    return response


@login_required
@require_POST
def finalise_invoice(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice = visible_invoice(request, invoice_id)
    require_finance(request.user)
    try:
        services.finalise(invoice.pk, signed_in(request).username)
        messages.success(request, f"{invoice.number} is finalised.")
    except BillingError as exc:
        messages.error(request, str(exc))
    return redirect("billing_invoice", invoice_id=invoice.pk)


@login_required
@require_POST
def draft_month(request: HttpRequest) -> HttpResponse:
    require_finance(request.user)
    month = inputs.month(request.POST.get("month"), default=last_month())
    services.meter_month(month)
    report = services.draft_month(month)
    messages.success(
        request, f"{month:%Y-%m}: {len(report.drafted)} invoices drafted, {len(report.finalised)} already finalised."
    )
    for team, why in report.failed.items():
        messages.error(request, f"{team}: {why}")
    return redirect(f"{reverse('billing_overview')}?month={month:%Y-%m}")


def _back_to_month(request: HttpRequest) -> str:
    """The billing page of the month the form was sent from."""
    month = request.POST.get("month", "")
    return reverse("billing_overview") + (f"?month={month}" if inputs.MONTH.fullmatch(month) else "")


def _refused(request: HttpRequest, form: forms.Form) -> bool:
    """Whether the form is invalid; each problem becomes a message naming its field."""
    if form.is_valid():
        return False
    for field, problems in form.errors.items():
        messages.error(request, f"{field}: {' '.join(str(p) for p in problems)}")
    return True


@login_required
@require_POST
def add_rate_card(request: HttpRequest) -> HttpResponse:
    """Finance adds a rate card through the billing service; each error names its field."""
    require_finance(request.user)
    form, back = RateCardForm(request.POST), _back_to_month(request)
    if _refused(request, form):
        return redirect(back)
    data = form.cleaned_data
    try:
        card = services.add_rate_card(
            gpu_model=data["gpu_model"], pool_kind=data["pool_kind"], pool=data["pool"].strip(),
            per_gpu_hour=data["per_gpu_hour"], valid_from=data["valid_from"], valid_until=data["valid_until"],
            note=data["note"],
        )  # fmt: skip
    except BillingError as exc:
        messages.error(request, str(exc))
    else:
        where = card.pool or card.get_pool_kind_display().lower()
        messages.success(
            request, f"Rate card added: {card.gpu_model.upper()} on {where}, {card.per_gpu_hour}/GPU-hour from {card.valid_from}."
        )
    return redirect(back)


@login_required
@require_POST
def add_storage_rate(request: HttpRequest) -> HttpResponse:
    """Finance adds a storage rate card (per GB-month) through the billing service; each error names its field."""
    require_finance(request.user)
    form, back = StorageRateForm(request.POST), _back_to_month(request)
    if _refused(request, form):
        return redirect(back)
    data = form.cleaned_data
    try:
        card = services.add_storage_rate(
            per_gb_month=data["per_gb_month"], valid_from=data["valid_from"], valid_until=data["valid_until"], note=data["note"]
        )
    except BillingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Storage rate added: {card.per_gb_month}/GB-month from {card.valid_from}.")
    return redirect(back)


@login_required
@require_POST
def read_notifications(request: HttpRequest) -> HttpResponse:
    notify.mark_read(signed_in(request))
    return redirect("billing_overview")
