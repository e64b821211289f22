"""Burst policies, the instance catalogue, proposals with their states, paid burst nodes and the audit trail."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from portal.models import Team
from portal.permissions import RestrictedModel
from portal.states import Transitions


class BurstState(models.TextChoices):
    """A burst's life: proposed, decided, provisioned, running, over."""

    PROPOSED = "proposed", "Waiting for approval"
    APPROVED = "approved", "Approved"
    PROVISIONING = "provisioning", "Provisioning"
    ACTIVE = "active", "Active"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Failed"
    ENDED = "ended", "Ended"


S = BurstState
TRANSITIONS = Transitions(
    {
        S.PROPOSED: frozenset({S.APPROVED, S.REJECTED, S.EXPIRED}),
        S.APPROVED: frozenset({S.PROVISIONING}),
        S.PROVISIONING: frozenset({S.ACTIVE, S.FAILED}),
        S.ACTIVE: frozenset({S.ENDED}),
        S.REJECTED: frozenset(),
        S.EXPIRED: frozenset(),
        S.FAILED: frozenset(),
        S.ENDED: frozenset(),
    }
)
OPEN_STATES = frozenset({S.PROPOSED, S.APPROVED, S.PROVISIONING, S.ACTIVE})


def sources_of(target: str) -> frozenset[str]:
    return TRANSITIONS.sources_of(target)


class NodeStatus(models.TextChoices):
    """A burst node as the portal accounts for it; requested and ready nodes are paid for."""

    REQUESTED = "requested", "Requested"
    READY = "ready", "Ready"
    RELEASED = "released", "Released"
    FAILED = "failed", "Failed"


PAID_NODE_STATES = frozenset({NodeStatus.REQUESTED, NodeStatus.READY})


class InstanceType(RestrictedModel):
    """A cloud instance type a burst may use: its GPUs, their model, its price, and the cloud pool its nodes join."""

    name = models.CharField(max_length=60, unique=True, help_text="As the provider names it, e.g. g5.12xlarge.")
    gpu_model = models.CharField(max_length=20)
    gpus = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    price_per_hour = models.DecimalField(max_digits=10, decimal_places=4, help_text="One node for one hour.")
    pool = models.CharField(max_length=60, help_text="The cloud pool (node group) nodes of this type join.")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["gpu_model", "price_per_hour", "name"]
        constraints = [models.CheckConstraint(condition=models.Q(price_per_hour__gt=0), name="instance_price_positive")]

    def __str__(self) -> str:
        return f"{self.name} ({self.gpus}× {self.gpu_model.upper()}, {self.price_per_hour}/h)"


class BurstPolicy(RestrictedModel):
    """When the queue of one GPU model warrants a burst, which instance types may serve it, and its limits.

    A job asks for a GPU model, not a pool, so a policy watches the waiting jobs of its model (the
    queue of that model's pools) and proposes nodes for the cloud pools of its instance types.
    """

    name = models.CharField(max_length=60, unique=True)
    gpu_model = models.CharField(max_length=20)
    enabled = models.BooleanField(default=True)
    instance_types = models.ManyToManyField(InstanceType, related_name="policies")
    trigger_pending_gpus = models.PositiveIntegerField(default=8, help_text="Propose when this many GPUs wait (0: off).")
    trigger_wait_s = models.PositiveIntegerField(default=1800, help_text="…or the oldest job waits this long (0: off).")
    trigger_window_s = models.PositiveIntegerField(default=300, help_text="The trigger must hold this long first.")
    min_nodes = models.PositiveIntegerField(default=0)
    max_nodes = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1)])
    max_duration_s = models.PositiveIntegerField(default=8 * 3600, validators=[MinValueValidator(60)])
    idle_release_s = models.PositiveIntegerField(default=600, help_text="Release a burst node idle this long.")
    proposal_ttl_s = models.PositiveIntegerField(default=3600, help_text="An undecided proposal expires after this.")
    auto_approve_below = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="Approve without an operator under this cost."
    )
    allowed_teams = models.ManyToManyField(Team, blank=True, related_name="+", help_text="Empty: every team may burst.")
    triggered_since = models.DateTimeField(null=True, blank=True, help_text="Since when the trigger has held.")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "burst policies"

    def __str__(self) -> str:
        return self.name


class BurstProposal(RestrictedModel):
    """One burst, from its proposal with the cost projection to its end: its state moves only by the transition table."""

    policy = models.ForeignKey(BurstPolicy, on_delete=models.PROTECT, related_name="proposals")
    state = models.CharField(max_length=12, choices=BurstState.choices, default=BurstState.PROPOSED, db_index=True)
    instance_type = models.ForeignKey(InstanceType, on_delete=models.PROTECT, related_name="+")
    pool = models.CharField(max_length=60)
    gpus_per_node = models.PositiveIntegerField()
    price_per_hour = models.DecimalField(max_digits=10, decimal_places=4, help_text="As proposed.")
    nodes = models.PositiveIntegerField(help_text="Proposed; an approval may lower it.")
    duration_s = models.PositiveIntegerField(help_text="Proposed; an approval may cap it.")
    projected_cost = models.DecimalField(max_digits=14, decimal_places=2)
    approved_nodes = models.PositiveIntegerField(null=True, blank=True)
    approved_duration_s = models.PositiveIntegerField(null=True, blank=True)
    approved_cost = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    projection = models.JSONField(default=dict, help_text="Per team, left out, not started, alternatives, job ids.")
    trigger = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decision_reason = models.CharField(max_length=300, blank=True)
    active_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True, help_text="The cap: the burst is over at this time.")
    ended_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"burst #{self.pk} {self.nodes}× {self.instance_type_id} ({self.state})"

    @property
    def hours(self) -> Decimal:
        return Decimal(self.approved_duration_s or self.duration_s) / 3600


class BurstNode(RestrictedModel):
    """A node a burst asked the provider for: the portal's record of what it pays for, reconciled with the provider's."""

    burst = models.ForeignKey(BurstProposal, on_delete=models.PROTECT, related_name="burst_nodes")
    name = models.CharField(max_length=120, unique=True, help_text="Chosen before the request, so a retry finds it.")
    pool = models.CharField(max_length=60)
    slot = models.PositiveIntegerField(help_text="Which of the burst's nodes this is; a retry takes the failed one's slot.")
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=10, choices=NodeStatus.choices, default=NodeStatus.REQUESTED, db_index=True)
    requested_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)
    idle_since = models.DateTimeField(null=True, blank=True)
    draining = models.BooleanField(default=False)
    released_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["burst", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class BurstEvent(RestrictedModel):
    """Append-only audit of bursts: every proposal, decision, provisioning step and release, with who and why."""

    burst = models.ForeignKey(BurstProposal, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    node = models.CharField(max_length=120, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=30)
    from_state = models.CharField(max_length=12, blank=True)
    to_state = models.CharField(max_length=12, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"burst #{self.burst_id} {self.action} by {self.actor}"


class SimCloudInstance(RestrictedModel):
    """The simulated cloud provider's own record of an instance, apart from the portal's (so the two can disagree)."""

    name = models.CharField(max_length=120, unique=True)
    pool = models.CharField(max_length=60)
    instance_type = models.CharField(max_length=60)
    requested_at = models.DateTimeField()
    ready_at = models.DateTimeField()
    outcome = models.CharField(max_length=12, help_text="ok | failed, drawn at request time from the seed")
    state = models.CharField(max_length=12, default="pending", help_text="pending | running | failed | terminated")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class MachineClaim(RestrictedModel):
    """A provider's own record of a node it asked for under the portal's name, where the cluster names nodes itself.

    Cluster API: the first unclaimed node that joins the pool is bound to the oldest open claim, and
    the MachineDeployment's replicas are the number of open (pending or bound) claims of its pool.
    Slurm's power-save nodes: the claim takes a powered-down slot of slurm.conf at once (`node`).
    """

    name = models.CharField(max_length=120, unique=True, help_text="The name the portal asked under.")
    pool = models.CharField(max_length=60, db_index=True)
    instance_type = models.CharField(max_length=60)
    requested_at = models.DateTimeField()
    node = models.CharField(max_length=253, blank=True, db_index=True, help_text="The Kubernetes node bound to it.")
    state = models.CharField(max_length=10, default="pending", help_text="pending | bound | failed | released")

    class Meta:
        ordering = ["requested_at", "id"]

    def __str__(self) -> str:
        return f"{self.name} → {self.node or '(not joined)'} ({self.state})"
