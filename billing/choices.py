"""Billing's states and kinds, as code constants."""

from __future__ import annotations

from django.db import models

from portal.states import Transitions


class InvoiceState(models.TextChoices):
    DRAFT = "draft", "Draft"
    FINALISED = "finalised", "Finalised"


# A draft is finalised once; a finalised invoice never changes (a correction is a new invoice).
INVOICE_TRANSITIONS = Transitions({InvoiceState.DRAFT: {InvoiceState.FINALISED}, InvoiceState.FINALISED: set()})


class LineKind(models.TextChoices):
    USAGE = "usage", "GPU usage"
    STORAGE = "storage", "Artifact storage"
    ADJUSTMENT = "adjustment", "Correction of an earlier month"


class BudgetPeriod(models.TextChoices):
    MONTH = "month", "Monthly"
    QUARTER = "quarter", "Quarterly"


class BudgetAction(models.TextChoices):
    """What crossing a threshold does; every action also notifies finance and the team's leads."""

    NOTIFY = "notify", "Notify"
    LOWER_PRIORITY = "lower_priority", "Lower the team's priority"
    DENY_BURSTS = "deny_bursts", "Deny new cloud bursts"
    HOLD_NEW_JOBS = "hold_new_jobs", "Hold new jobs"


RESTRICTING_ACTIONS = frozenset({BudgetAction.LOWER_PRIORITY, BudgetAction.DENY_BURSTS, BudgetAction.HOLD_NEW_JOBS})


class AlertKind(models.TextChoices):
    CROSSED = "crossed", "Threshold crossed"
    PROJECTED = "projected", "Projected to cross"
