"""API shapes of rate cards, invoices, budgets and the month summary; money as decimal strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from billing.choices import BudgetAction, BudgetPeriod
from billing.models import Budget, Invoice, InvoiceLine, RateCard, StorageRateCard
from cluster.states import PoolKind
from portal.models import Team
from portal.serializers import MonthField


class RateCardSerializer(serializers.ModelSerializer[RateCard]):
    pool_kind = serializers.ChoiceField(choices=PoolKind.choices)

    class Meta:
        model = RateCard
        fields = ["id", "gpu_model", "pool_kind", "pool", "valid_from", "valid_until", "per_gpu_hour", "note"]
        read_only_fields = ["id"]
        validators: list[Any] = []  # overlaps are checked by the service, with a message naming the other card


class StorageRateCardSerializer(serializers.ModelSerializer[StorageRateCard]):
    per_gb_month = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal(0), max_value=Decimal(10000))

    class Meta:
        model = StorageRateCard
        fields = ["id", "valid_from", "valid_until", "per_gb_month", "note"]
        read_only_fields = ["id"]
        validators: list[Any] = []  # overlaps are checked by the service, with a message naming the other card


class RateChangeSerializer(serializers.Serializer[Any]):
    gpu_model = serializers.CharField(max_length=20)
    pool_kind = serializers.ChoiceField(choices=PoolKind.choices)
    pool = serializers.CharField(max_length=60, required=False, default="", allow_blank=True)
    per_gpu_hour = serializers.DecimalField(max_digits=12, decimal_places=4)
    from_day = serializers.DateField()
    note = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class InvoiceLineSerializer(serializers.ModelSerializer[InvoiceLine]):
    corrects = serializers.SerializerMethodField()

    class Meta:
        model = InvoiceLine
        fields = [
            "position",
            "kind",
            "description",
            "gpu_model",
            "pool",
            "pool_kind",
            "gpu_seconds",
            "used_gpu_seconds",
            "gb_months",
            "rate",
            "amount",
            "corrects",
        ]

    def get_corrects(self, line: InvoiceLine) -> str | None:
        return line.corrects.number if line.corrects else None


class InvoiceSerializer(serializers.ModelSerializer[Invoice]):
    team: serializers.SlugRelatedField[Team] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    month = serializers.DateField(format="%Y-%m")
    lines = InvoiceLineSerializer(many=True, read_only=True)

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "team",
            "month",
            "state",
            "currency",
            "total",
            "generated_at",
            "finalised_at",
            "finalised_by",
            "lines",
        ]
        read_only_fields = fields


class GenerateSerializer(serializers.Serializer[Any]):
    team = serializers.SlugField(max_length=40)
    month = MonthField()


class AdjustmentSerializer(serializers.Serializer[Any]):
    month = MonthField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    reason = serializers.CharField(max_length=200)


class ThresholdSerializer(serializers.Serializer[Any]):
    percent = serializers.DecimalField(max_digits=6, decimal_places=2)
    action = serializers.ChoiceField(choices=BudgetAction.choices, default=BudgetAction.NOTIFY)


class BudgetSerializer(serializers.ModelSerializer[Budget]):
    team: serializers.SlugRelatedField[Team] = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    thresholds = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = ["id", "team", "period", "amount", "active", "thresholds"]

    def get_thresholds(self, budget: Budget) -> list[dict[str, str]]:
        return [{"percent": f"{t.percent}", "action": t.action} for t in budget.thresholds.all()]


class BudgetInputSerializer(serializers.Serializer[Any]):
    team = serializers.SlugField(max_length=40)
    period = serializers.ChoiceField(choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    thresholds = ThresholdSerializer(many=True)
