"""Rate cards, metered usage, invoices and their lines, corrections, budgets and their alerts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.choices import AlertKind, BudgetAction, BudgetPeriod, InvoiceState, LineKind
from cluster.states import PoolKind
from jobs.models import Job
from portal.models import Team
from portal.permissions import VIEW, RestrictedModel, RestrictedQuerySet, Rule, is_finance, is_operator, of_led_teams


class RateCard(RestrictedModel):
    """The price of one GPU-hour of a GPU model on a kind of pool (or one named pool), for a period.

    Cards of the same key never overlap; a rate change ends the current card and starts a new one
    on the change's date. Dates are UTC days; `valid_until` is exclusive.
    """

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return bool(is_finance(user) or is_operator(user))

    gpu_model = models.CharField(max_length=20)
    pool_kind = models.CharField(max_length=10, choices=PoolKind.choices)
    pool = models.CharField(
        max_length=60, blank=True, help_text="A pool's own rate (e.g. one cloud instance type); empty: every pool of the kind."
    )
    valid_from = models.DateField()
    valid_until = models.DateField(null=True, blank=True, help_text="Exclusive; empty: until further notice.")
    per_gpu_hour = models.DecimalField(max_digits=12, decimal_places=4)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["gpu_model", "pool_kind", "pool", "valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["gpu_model", "pool_kind", "pool", "valid_from"], name="one_rate_card_per_key_and_start"
            ),
            models.CheckConstraint(condition=models.Q(per_gpu_hour__gte=0), name="rate_card_not_negative"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.gpu_model} {self.pool_kind}{' ' + self.pool if self.pool else ''} from {self.valid_from}: {self.per_gpu_hour}"
        )


class UsageRecord(RestrictedModel):
    """A piece of a job's GPU time that lies in one month and one rate period, priced by one card.

    Written only by the metering service from the job's events; re-metering a job replaces its
    records in months whose invoice is not finalised.
    """

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Finance sees and changes every team's costs; a team lead sees their own teams'.
        if is_finance(user):
            return True
        return of_led_teams(user, "team_id") if action == VIEW else False

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="usage_records")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="usage_records")
    month = models.DateField(help_text="First day of the month the piece lies in (UTC).")
    gpu_model = models.CharField(max_length=20)
    pool = models.CharField(max_length=60)
    pool_kind = models.CharField(max_length=10, choices=PoolKind.choices)
    backend = models.CharField(max_length=20, blank=True)
    start = models.DateTimeField()
    end = models.DateTimeField()
    gpus = models.PositiveIntegerField()
    gpu_seconds = models.DecimalField(max_digits=20, decimal_places=6)
    used_gpu_seconds = models.DecimalField(
        max_digits=20, decimal_places=6, null=True, blank=True, help_text="GPU-seconds actually busy, from telemetry, when known."
    )
    rate_card = models.ForeignKey(RateCard, null=True, blank=True, on_delete=models.PROTECT, related_name="usage_records")
    open = models.BooleanField(default=False, help_text="The job still holds GPUs; the piece grows at the next metering.")

    class Meta:
        ordering = ["start", "id"]
        indexes = [
            models.Index(fields=["month", "team"], name="usage_month_team"),
            models.Index(fields=["job", "month"], name="usage_job_month"),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(end__gte=models.F("start")), name="usage_end_after_start")]

    def __str__(self) -> str:
        return f"job #{self.job_id} {self.gpu_model} {self.pool} {self.start:%Y-%m-%d %H:%M}–{self.end:%Y-%m-%d %H:%M}"


class StorageRateCard(RestrictedModel):
    """The price of keeping one GB (10⁹ bytes) on the artifact store for a month (30 days), for a period.

    Cards never overlap; days no card covers are not billed. Dates are UTC days; `valid_until` is exclusive.
    """

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return bool(is_finance(user) or is_operator(user))

    valid_from = models.DateField(unique=True)
    valid_until = models.DateField(null=True, blank=True, help_text="Exclusive; empty: until further notice.")
    per_gb_month = models.DecimalField(max_digits=12, decimal_places=4)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["valid_from"]
        constraints = [models.CheckConstraint(condition=models.Q(per_gb_month__gte=0), name="storage_rate_not_negative")]

    def __str__(self) -> str:
        return f"storage from {self.valid_from}: {self.per_gb_month}/GB-month"


class StorageUsage(RestrictedModel):
    """What a team kept on the artifact store during one UTC day, in byte-seconds.

    Written only by billing.services.storage from the artifact store's usage measurements: the bytes
    measured at one pass are taken as kept until the next.
    """

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        if is_finance(user):
            return True
        return of_led_teams(user, "team_id") if action == VIEW else False

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="storage_usage")
    day = models.DateField()
    byte_seconds = models.DecimalField(max_digits=32, decimal_places=0, default=Decimal(0))

    class Meta:
        ordering = ["day", "team_id"]
        constraints = [models.UniqueConstraint(fields=["team", "day"], name="one_storage_usage_per_team_and_day")]

    def __str__(self) -> str:
        return f"team {self.team_id} storage on {self.day}: {self.byte_seconds} byte-seconds"


class InvoiceQuerySet(RestrictedQuerySet["Invoice"]):
    def visible_to(self, user: Any) -> InvoiceQuerySet:
        """Finance sees every team's invoices; a team lead sees their own team's; nobody else any."""
        return self.restrict(user, VIEW)


class Invoice(RestrictedModel):
    """One team's bill for one month: a draft that generation may rewrite, then finalised and immutable."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Finance sees and changes every team's costs; a team lead sees their own teams'.
        if is_finance(user):
            return True
        return of_led_teams(user, "team_id") if action == VIEW else False

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="invoices")
    month = models.DateField(help_text="First day of the billed month (UTC).")
    state = models.CharField(max_length=10, choices=InvoiceState.choices, default=InvoiceState.DRAFT)
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0.00"))
    generated_at = models.DateTimeField(default=timezone.now)
    finalised_at = models.DateTimeField(null=True, blank=True)
    finalised_by = models.CharField(max_length=150, blank=True)

    objects = InvoiceQuerySet.as_manager()  # type: ignore[misc]  # narrows the base's manager

    class Meta:
        ordering = ["-month", "team__slug"]
        constraints = [models.UniqueConstraint(fields=["team", "month"], name="one_invoice_per_team_and_month")]

    def __str__(self) -> str:
        return f"{self.team} {self.month:%Y-%m} ({self.state})"

    @property
    def number(self) -> str:
        return f"GG-{self.month:%Y%m}-{self.team_id:04d}"

    @property
    def is_finalised(self) -> bool:
        return self.state == InvoiceState.FINALISED


class InvoiceLine(RestrictedModel):
    """A line of an invoice: GPU usage of one model on one pool at one rate, artifact storage at one rate, or a correction."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Finance sees and changes every team's costs; a team lead sees their own teams'.
        if is_finance(user):
            return True
        return of_led_teams(user, "invoice__team_id") if action == VIEW else False

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=12, choices=LineKind.choices, default=LineKind.USAGE)
    description = models.CharField(max_length=200)
    gpu_model = models.CharField(max_length=20, blank=True)
    pool = models.CharField(max_length=60, blank=True)
    pool_kind = models.CharField(max_length=10, choices=PoolKind.choices, blank=True)
    rate_card = models.ForeignKey(RateCard, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    storage_rate = models.ForeignKey(StorageRateCard, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    rate = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    gb_months = models.DecimalField(
        max_digits=20, decimal_places=6, null=True, blank=True, help_text="Storage lines: GB-months kept (10⁹ bytes, 30 days)."
    )
    gpu_seconds = models.DecimalField(max_digits=20, decimal_places=6, default=Decimal(0))
    used_gpu_seconds = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    corrects = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="corrected_by")

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [models.UniqueConstraint(fields=["invoice", "position"], name="one_line_per_position")]

    def __str__(self) -> str:
        return f"{self.invoice} #{self.position}: {self.description} {self.amount}"


class Adjustment(RestrictedModel):
    """A credit (negative) or debit correcting a finalised invoice, billed on a later month's invoice."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Finance sees and changes every team's costs; a team lead sees their own teams'.
        if is_finance(user):
            return True
        return of_led_teams(user, "team_id") if action == VIEW else False

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="billing_adjustments")
    month = models.DateField(help_text="The month whose invoice carries the correction.")
    corrects = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="adjustments")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    reason = models.CharField(max_length=200)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["month", "id"]

    def __str__(self) -> str:
        return f"{self.team} {self.month:%Y-%m}: {self.amount} ({self.reason})"


class BudgetQuerySet(RestrictedQuerySet["Budget"]):
    def visible_to(self, user: Any) -> BudgetQuerySet:
        """The same rule as invoices: finance sees all, a team lead their own team's."""
        return self.restrict(user, VIEW)


class Budget(RestrictedModel):
    """A team's spending limit for each month (or quarter), with thresholds that warn and act."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Finance sees and changes every team's costs; a team lead sees their own teams'.
        if is_finance(user):
            return True
        return of_led_teams(user, "team_id") if action == VIEW else False

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="budgets")
    period = models.CharField(max_length=10, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = BudgetQuerySet.as_manager()  # type: ignore[misc]  # narrows the base's manager

    class Meta:
        ordering = ["team__slug", "period"]
        constraints = [
            models.UniqueConstraint(fields=["team", "period"], name="one_budget_per_team_and_period"),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="budget_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.period} {self.amount}"


class BudgetThreshold(RestrictedModel):
    """A percentage of a budget and the action taken when spend reaches it."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Finance sees and changes every team's costs; a team lead sees their own teams'.
        if is_finance(user):
            return True
        return of_led_teams(user, "budget__team_id") if action == VIEW else False

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="thresholds")
    percent = models.DecimalField(max_digits=6, decimal_places=2)
    action = models.CharField(max_length=20, choices=BudgetAction.choices, default=BudgetAction.NOTIFY)

    class Meta:
        ordering = ["budget", "percent"]
        constraints = [models.UniqueConstraint(fields=["budget", "percent"], name="one_threshold_per_percent")]

    def __str__(self) -> str:
        return f"{self.budget}: {self.percent} % → {self.action}"


class BudgetAlert(RestrictedModel):
    """The record that a threshold was crossed (or projected to be) in a period: at most one of each.

    The unique constraint is what makes an alert go out once even when several workers evaluate
    the same budget at the same moment: only the worker whose insert succeeds notifies. The
    threshold is copied (percent, action) so the record outlives later edits of the budget.
    """

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Finance sees and changes every team's costs; a team lead sees their own teams'.
        if is_finance(user):
            return True
        return of_led_teams(user, "team_id") if action == VIEW else False

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="budget_alerts")
    period_start = models.DateField()
    percent = models.DecimalField(max_digits=6, decimal_places=2)
    action = models.CharField(max_length=20, choices=BudgetAction.choices)
    kind = models.CharField(max_length=10, choices=AlertKind.choices)
    spent = models.DecimalField(max_digits=14, decimal_places=2)
    projected = models.DecimalField(max_digits=14, decimal_places=2)
    budget_amount = models.DecimalField(max_digits=14, decimal_places=2)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "percent", "kind"], name="one_alert_per_threshold_period_kind"
            )
        ]

    def __str__(self) -> str:
        return f"{self.team} {self.period_start:%Y-%m} {self.kind} {self.percent} %"


class TeamRestriction(RestrictedModel):
    """A budget action in force for a team until the period ends or finance lifts it.

    The admission scheduler reads these through `billing.services.team_restrictions`.
    """

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        # Finance sees and changes every team's costs; a team lead sees their own teams'.
        if is_finance(user):
            return True
        return of_led_teams(user, "team_id") if action == VIEW else False

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="billing_restrictions")
    action = models.CharField(max_length=20, choices=BudgetAction.choices)
    alert = models.ForeignKey(BudgetAlert, on_delete=models.CASCADE, related_name="restrictions")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-starts_at", "-id"]
        indexes = [models.Index(fields=["team", "ends_at"], name="restriction_team_ends")]

    def __str__(self) -> str:
        return f"{self.team}: {self.action} until {self.ends_at:%Y-%m-%d}"


class Notification(RestrictedModel):
    """An in-app message to one user (the e-mail's twin), shown on the billing pages until read."""

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        return Q(recipient_id=user.pk)  # one's own notifications only

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_notifications")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    subject = models.CharField(max_length=200)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["recipient", "read_at"], name="notification_unread")]

    def __str__(self) -> str:
        return f"to {self.recipient_id}: {self.subject}"
