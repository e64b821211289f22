"""Billing REST API: invoices (read, export, draft, finalise, correct), rate cards, storage rates, budgets, month summary.

Finance sees and does everything; a team lead reads their own team's invoices and budgets; anyone
else is refused (403), and an object outside the caller's teams is not found (404). Invoices are
never updated or deleted through the API: no PUT, PATCH or DELETE routes exist.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action, api_view
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import exports, services
from billing.access import billing_teams, may_see_billing
from billing.errors import BillingError, InvoiceFinalised
from billing.models import Budget, Invoice, RateCard, StorageRateCard
from billing.serializers import (
    AdjustmentSerializer,
    BudgetInputSerializer,
    BudgetSerializer,
    GenerateSerializer,
    InvoiceSerializer,
    RateCardSerializer,
    RateChangeSerializer,
    StorageRateCardSerializer,
)  # fmt: skip
from billing.services.reports import summary as month_summary
from portal import inputs
from portal.access import is_finance, signed_in
from portal.models import Team


class BillingReader(permissions.BasePermission):
    """Reads for finance and team leads; writes for finance only."""

    message = "billing is for finance and team leads; changes are for finance"

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return may_see_billing(request.user)
        return is_finance(request.user)


def refused(exc: BillingError) -> Response:
    code = status.HTTP_409_CONFLICT if isinstance(exc, InvoiceFinalised) else status.HTTP_400_BAD_REQUEST
    return Response({exc.field: [exc.message]}, status=code)


def team_for(user: Any, slug: str) -> Team:
    team = billing_teams(user).filter(slug=slug).first()
    if team is None:
        raise ValidationError({"team": [f"no team {slug!r} that you may bill"]})
    return team


@extend_schema(tags=["billing"])
class InvoiceViewSet(viewsets.ReadOnlyModelViewSet[Invoice]):
    """Invoices you may see; filter with ?month=YYYY-MM and ?team=slug."""

    serializer_class = InvoiceSerializer
    permission_classes = [BillingReader]

    def get_queryset(self) -> QuerySet[Invoice]:
        invoices = Invoice.objects.visible_to(self.request.user).select_related("team").prefetch_related("lines__corrects")
        month, team = self.request.query_params.get("month"), self.request.query_params.get("team")
        if month:
            invoices = invoices.filter(month=inputs.month(month))
        return invoices.filter(team__slug=team) if team else invoices

    @action(detail=True, methods=["get"])
    def csv(self, request: Request, pk: str | None = None) -> HttpResponse:
        invoice = self.get_object()
        response = HttpResponse(exports.csv_text([invoice]), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{invoice.number}.csv"'
        return response

    @action(detail=True, methods=["get"])
    def pdf(self, request: Request, pk: str | None = None) -> HttpResponse:
        invoice = self.get_object()
        response = HttpResponse(exports.pdf_bytes(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{invoice.number}.pdf"'
        return response

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def finalise(self, request: Request, pk: str | None = None) -> Response:
        invoice = self.get_object()
        try:
            invoice = services.finalise(invoice.pk, signed_in(request).username)
        except BillingError as exc:
            return refused(exc)
        return Response(InvoiceSerializer(invoice).data)

    @extend_schema(request=AdjustmentSerializer)
    @action(detail=True, methods=["post"])
    def correct(self, request: Request, pk: str | None = None) -> Response:
        """Bill a credit (negative) or debit for this finalised invoice on a later month's invoice."""
        invoice = self.get_object()
        body = AdjustmentSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            services.add_adjustment(invoice.pk, data["month"], data["amount"], data["reason"], signed_in(request).username)
        except BillingError as exc:
            return refused(exc)
        return Response(status=status.HTTP_201_CREATED)

    @extend_schema(request=GenerateSerializer, responses={200: InvoiceSerializer})
    @action(detail=False, methods=["post"])
    def generate(self, request: Request) -> Response:
        """Meter the month and draft (or redraft) one team's invoice; 409 if it is finalised."""
        body = GenerateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        team, month = team_for(request.user, body.validated_data["team"]), body.validated_data["month"]
        try:
            services.meter_month(month)
            invoice = services.generate_invoice(team.pk, month)
        except BillingError as exc:
            return refused(exc)
        return Response(InvoiceSerializer(Invoice.objects.get(pk=invoice.pk)).data)


@extend_schema(tags=["billing"])
class RateCardViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet[RateCard]
):
    """Rate cards; finance creates them (never overlapping) or changes a rate from a day on."""

    serializer_class = RateCardSerializer
    permission_classes = [BillingReader]
    queryset = RateCard.objects.all()
    pagination_class = None

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = RateCardSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            card = services.add_rate_card(**body.validated_data)
        except BillingError as exc:
            return refused(exc)
        return Response(RateCardSerializer(card).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=RateChangeSerializer, responses={201: RateCardSerializer})
    @action(detail=False, methods=["post"])
    def change(self, request: Request) -> Response:
        body = RateChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            card = services.change_rate(**body.validated_data)
        except BillingError as exc:
            return refused(exc)
        return Response(RateCardSerializer(card).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["billing"])
class StorageRateCardViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet[StorageRateCard]
):
    """Artifact storage rate cards (per GB-month: 10⁹ bytes kept 30 days); finance creates them, never overlapping."""

    serializer_class = StorageRateCardSerializer
    permission_classes = [BillingReader]
    queryset = StorageRateCard.objects.all()
    pagination_class = None

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = StorageRateCardSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            card = services.add_storage_rate(**body.validated_data)
        except BillingError as exc:
            return refused(exc)
        return Response(StorageRateCardSerializer(card).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["billing"])
class BudgetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet[Budget]):
    """Budgets you may see; finance sets a team's budget (creating or replacing it) with rising thresholds."""

    serializer_class = BudgetSerializer
    permission_classes = [BillingReader]
    pagination_class = None

    def get_queryset(self) -> QuerySet[Budget]:
        return Budget.objects.visible_to(self.request.user).select_related("team").prefetch_related("thresholds")

    @extend_schema(request=BudgetInputSerializer, responses={201: BudgetSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = BudgetInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        team = team_for(request.user, data["team"])
        try:
            budget = services.set_budget(
                team.pk, data["amount"], [(t["percent"], t["action"]) for t in data["thresholds"]], data["period"]
            )
        except BillingError as exc:
            return refused(exc)
        return Response(BudgetSerializer(budget).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["billing"], responses={200: dict})
@api_view(["GET"])
def summary(request: Request) -> Response:
    """A month's totals, cost by GPU model and by pool kind, and top spenders (your teams only, unless finance)."""
    if not may_see_billing(request.user):
        return Response({"detail": BillingReader.message}, status=status.HTTP_403_FORBIDDEN)
    month = inputs.month(request.query_params.get("month"))
    team_ids = None if is_finance(request.user) else list(billing_teams(request.user).values_list("id", flat=True))
    report = month_summary(month, team_ids)
    return Response(
        {
            "month": f"{month:%Y-%m}", "currency": services.invoices.currency(), "total": f"{report['total']}",
            "teams": [{"team": i.team.slug, "invoice": i.number, "state": i.state, "total": f"{i.total}"} for i in report["invoices"]],
            "by_gpu_model": {k: f"{v}" for k, v in report["by_gpu_model"].items()},
            "by_pool_kind": {k: f"{v}" for k, v in report["by_pool_kind"].items()},
            "by_department": {k: f"{v}" for k, v in report["by_department"].items()},
        }
    )  # fmt: skip


# Mounted under /api/v1/ by grid/urls.py, like every app's ROUTES and PATHS.
ROUTES = [
    ("billing/invoices", InvoiceViewSet, "billing-invoice"),
    ("billing/rate-cards", RateCardViewSet, "billing-rate-card"),
    ("billing/storage-rates", StorageRateCardViewSet, "billing-storage-rate"),
    ("billing/budgets", BudgetViewSet, "billing-budget"),
]
PATHS = [path("billing/summary/", summary, name="billing_api_summary")]
