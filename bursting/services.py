"""The bursting app's only write path: propose, approve, reject, expire, provision, reconcile, release.

Every state change of a burst is one conditional UPDATE through the transition table plus a
BurstEvent row (who, when, what before and after). Approval and the start of provisioning are
one transaction; the provider is called only after it commits. Every provider step reconciles
first, and node names are chosen before a request, so a retry finds the node instead of paying
for a second one.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from bursting import planner
from bursting.models import (
    OPEN_STATES,
    PAID_NODE_STATES,
    TRANSITIONS,
    BurstEvent,
    BurstNode,
    BurstPolicy,
    BurstProposal,
    BurstState,
    InstanceType,
    NodeStatus,
)
from bursting.provider import CapacityError, CloudProvider, Instance
from bursting.providers import get_provider
from bursting.slurm_power import PowerAnswer, SlurmPowerSave
from cluster import services as cluster_services
from cluster.backends import BackendError
from cluster.gpus import GPU_MODELS
from jobs.models import Job
from jobs.states import HOLDS_GPUS, WAITING, PendingReason
from portal.access import is_operator, operators
from portal.locks import transaction_lock
from portal.models import Team
from portal.queue import after_commit
from portal.states import move
from quotas import restrictions

log = logging.getLogger(__name__)
LOCK = "bursting"
SYSTEM = "burst-cycle"
# Waiting for these, more nodes would not start the job: it is the team's own limit or budget.
NOT_CAPACITY = frozenset({PendingReason.QUOTA, PendingReason.BUDGET})


class BurstActionError(Exception):
    """A burst action was refused; the message names the field or the state that stops it."""


class BurstForbidden(BurstActionError):
    """Only operators decide bursts."""


class PolicyError(BurstActionError):
    """A burst policy change was refused; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{field}: {' '.join(problems)}" for field, problems in errors.items()))
        self.errors = errors


# --- policies: what may burst where -----------------------------------------------------------


def pool_problem(instance_type: InstanceType, provider: CloudProvider | None = None) -> str:
    """Why the instance type's pool cannot take burst nodes ('' when it can): not elastic, or another shape."""
    try:
        (provider or get_provider()).check(instance_type.pool, instance_type.gpu_model, instance_type.gpus)
    except BackendError as exc:
        return f"{instance_type.name}: pool {instance_type.pool!r} cannot burst: {exc}"
    return ""


POLICY_FIELDS: dict[str, tuple[int, int]] = {  # whole-number fields an operator edits, with their limits
    "trigger_pending_gpus": (0, 100_000),
    "trigger_wait_s": (0, 30 * 86400),
    "trigger_window_s": (0, 86400),
    "min_nodes": (0, 1000),
    "max_nodes": (1, 1000),
    "max_duration_s": (60, 30 * 86400),
    "idle_release_s": (0, 86400),
    "proposal_ttl_s": (60, 7 * 86400),
}


def update_policy(user: Any, policy_id: int | None, data: dict[str, Any], provider: CloudProvider | None = None) -> BurstPolicy:
    """Create (policy_id None) or change a burst policy; operators only. Every error names its field; nothing is half-saved.

    `data`: name, gpu_model, enabled, the whole numbers of POLICY_FIELDS, auto_approve_below ('' for none),
    instance_types (names) and allowed_teams (slugs). Each instance type must be of the policy's GPU
    model and its pool must be an elastic cloud pool of that shape (else the error names `pool`).
    """
    if not is_operator(user):
        raise BurstForbidden("only operators change burst policies")
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    policy = BurstPolicy() if policy_id is None else BurstPolicy.objects.filter(pk=policy_id).first()
    if policy is None:
        raise BurstActionError(f"no burst policy #{policy_id}")
    name = str(data.get("name", policy.name)).strip()
    if not name or len(name) > 60:
        add("name", "1-60 characters")
    elif BurstPolicy.objects.filter(name=name).exclude(pk=policy.pk).exists():
        add("name", f"another policy is called {name!r}")
    gpu_model = str(data.get("gpu_model", policy.gpu_model)).strip().lower()
    if gpu_model not in GPU_MODELS:
        add("gpu_model", f"unknown GPU model {gpu_model!r}; known: {', '.join(sorted(GPU_MODELS))}")
    numbers: dict[str, int] = {}
    for field, (low, high) in POLICY_FIELDS.items():
        raw = data.get(field, getattr(policy, field))
        try:
            value = int(str(raw).strip())
        except ValueError:
            add(field, f"a whole number {low}-{high}")
            continue
        if not low <= value <= high:
            add(field, f"{value} is outside {low}-{high}")
        numbers[field] = value
    if "min_nodes" in numbers and "max_nodes" in numbers and numbers["min_nodes"] > numbers["max_nodes"]:
        add("min_nodes", f"{numbers['min_nodes']} is more than max_nodes ({numbers['max_nodes']})")
    given = data.get("auto_approve_below", policy.auto_approve_below)
    raw_limit = "" if given is None else str(given).strip()
    auto_approve: Decimal | None = None
    if raw_limit:
        try:
            auto_approve = Decimal(raw_limit)
        except InvalidOperation:
            add("auto_approve_below", "a cost, or empty for never")
        else:
            if not auto_approve.is_finite() or not Decimal(0) < auto_approve < Decimal("1e10"):
                add("auto_approve_below", "more than 0 and less than 10,000,000,000, or empty for never")
    names = [str(n) for n in data.get("instance_types", [])]
    types = list(InstanceType.objects.filter(name__in=names))
    for missing in sorted(set(names) - {t.name for t in types}):
        add("instance_types", f"no instance type called {missing!r}")
    if not types and not errors.get("instance_types"):
        add("instance_types", "choose at least one")
    for t in types:
        if t.gpu_model != gpu_model:
            add("instance_types", f"{t.name} has {t.gpu_model} GPUs, not {gpu_model}")
        elif problem := pool_problem(t, provider):
            add("pool", problem)  # e.g. an on-premises pool: approving would fail at every attempt
    slugs = [str(s) for s in data.get("allowed_teams", [])]
    teams = list(Team.objects.filter(slug__in=slugs))
    for missing in sorted(set(slugs) - {t.slug for t in teams}):
        add("allowed_teams", f"no team called {missing!r}")
    if errors:
        raise PolicyError(errors)
    with transaction.atomic():
        policy.name, policy.gpu_model, policy.enabled = name, gpu_model, bool(data.get("enabled", policy.enabled))
        for field, value in numbers.items():
            setattr(policy, field, value)
        policy.auto_approve_below = auto_approve
        policy.save()
        policy.instance_types.set(types)
        policy.allowed_teams.set(teams)
        record(None, str(user.username), "policy_changed", f"policy {policy.name}", after=policy_json(policy))
    return policy


def policy_json(policy: BurstPolicy) -> dict[str, Any]:
    fields = {f: getattr(policy, f) for f in POLICY_FIELDS}
    return {
        "name": policy.name, "gpu_model": policy.gpu_model, "enabled": policy.enabled, **fields,
        "auto_approve_below": str(policy.auto_approve_below) if policy.auto_approve_below is not None else None,
        "instance_types": sorted(policy.instance_types.values_list("name", flat=True)),
        "allowed_teams": sorted(policy.allowed_teams.values_list("slug", flat=True)),
    }  # fmt: skip


def burstable_capacity() -> dict[str, cluster_services.ModelCapacity]:
    """GPUs enabled policies can add per model (registered with cluster, so jobs of a model only bursts offer are valid)."""
    found: dict[str, cluster_services.ModelCapacity] = {}
    policies = BurstPolicy.objects.filter(enabled=True).prefetch_related("instance_types")
    for policy in policies:
        for t in policy.instance_types.all():
            if not t.active or t.gpu_model != policy.gpu_model:
                continue
            extra = cluster_services.ModelCapacity(t.gpus, t.gpus * policy.max_nodes, 0)
            was = found.get(t.gpu_model)
            found[t.gpu_model] = (
                extra
                if was is None
                else cluster_services.ModelCapacity(
                    max(was.max_gpus_per_node, extra.max_gpus_per_node), max(was.total_gpus, extra.total_gpus), 0
                )
            )
    return found


def teams_only_nodes() -> dict[str, cluster_services.TeamsOnly]:
    """The paid nodes of open bursts whose policy names its teams: only those teams' jobs may be placed
    there (registered with cluster; admission keeps other teams off them and says why)."""
    nodes = list(
        BurstNode.objects.filter(status__in=PAID_NODE_STATES, burst__state__in=OPEN_STATES).values_list(
            "name", "burst_id", "burst__policy_id", "burst__policy__name"
        )
    )
    if not nodes:
        return {}
    teams: dict[int, set[str]] = {}
    through = BurstPolicy.allowed_teams.through.objects.filter(burstpolicy_id__in={n[2] for n in nodes})
    for policy_id, slug in through.values_list("burstpolicy_id", "team__slug"):
        teams.setdefault(policy_id, set()).add(slug)
    return {
        name: cluster_services.TeamsOnly(
            frozenset(teams[policy_id]),
            f"node {name} is burst #{burst_id}'s, paid for by policy {policy} for {', '.join(sorted(teams[policy_id]))}",
        )
        for name, burst_id, policy_id, policy in nodes
        if policy_id in teams
    }


# --- transitions -----------------------------------------------------------------------------


def record(burst_id: int | None, actor: str, action: str, reason: str = "", **fields: Any) -> BurstEvent:
    return BurstEvent.objects.create(burst_id=burst_id, actor=actor, action=action, reason=reason[:300], **fields)


def transition(burst: BurstProposal, to: BurstState, actor: str, reason: str = "", **fields: Any) -> bool:
    """Move the burst to `to` if the table allows it from its state now; False if it did not move.

    The event records the state the burst really left (not the possibly stale one on `burst`).
    """
    with transaction.atomic():
        left = move(BurstProposal, burst.pk, to, TRANSITIONS, **fields)
        if left is None:
            return False
        record(burst.pk, actor, str(to), reason, from_state=left, to_state=to, after=_jsonable(fields) or None)
    burst.refresh_from_db()
    return True


def _jsonable(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal | datetime) else v) for k, v in fields.items()}


# --- demand and proposals --------------------------------------------------------------------


def waiting_demand(gpu_model: str, now: datetime) -> tuple[list[planner.WaitingJob], list[planner.Excluded], dict[str, int]]:
    """Waiting jobs of the model oldest first; those more nodes would not start; team slug -> id."""
    rows = (
        Job.objects.filter(state__in=WAITING, gpu_model=gpu_model)
        .order_by("submitted_at", "id")
        .values_list("id", "team_id", "team__slug", "gpus_per_node", "nodes", "walltime_s", "submitted_at", "reason")
    )
    jobs: list[planner.WaitingJob] = []
    blocked: dict[str, tuple[int, int]] = {}
    teams: dict[str, int] = {}
    for job_id, team_id, slug, per_node, nodes, walltime, submitted, reason in rows:
        teams[slug] = team_id
        if reason in NOT_CAPACITY:
            n, g = blocked.get(slug, (0, 0))
            blocked[slug] = (n + 1, g + per_node * nodes)
            continue
        wait = (now - submitted).total_seconds()
        jobs.append(planner.WaitingJob(job_id, slug, frozenset({gpu_model}), per_node, nodes, walltime, wait))
    left_out = [
        planner.Excluded(slug, "the team's own GPU limit or budget holds it, not capacity", n, g)
        for slug, (n, g) in sorted(blocked.items())
    ]
    return jobs, left_out, teams


def denied_teams(teams: dict[str, int]) -> dict[str, str]:
    """Teams whose budget forbids bursts, with the reason shown on the proposal."""
    slugs = {team_id: slug for slug, team_id in teams.items()}
    in_force = restrictions.active(teams.values())
    return {
        slugs[team_id]: "the team's budget forbids bursts (deny_bursts in force)"
        for team_id, actions in in_force.items()
        if restrictions.DENY_BURSTS in actions
    }


def plan_policy(policy: BurstPolicy, jobs: list[planner.WaitingJob], teams: dict[str, int]) -> planner.Proposal | None:
    offers = [
        planner.InstanceOffer(t.name, t.gpu_model, t.gpus, t.price_per_hour)
        for t in policy.instance_types.filter(active=True).order_by("name")
    ]
    spec = planner.PlanPolicy(
        policy.min_nodes, policy.max_nodes, policy.max_duration_s, frozenset(policy.allowed_teams.values_list("slug", flat=True))
    )
    return planner.plan(jobs, offers, spec, denied_teams(teams))


def projection_json(proposal: planner.Proposal, blocked: list[planner.Excluded]) -> dict[str, Any]:
    def rows(items: tuple[Any, ...] | list[Any]) -> list[dict[str, Any]]:
        return [{k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(item).items()} for item in items]

    return {
        "teams": rows(proposal.teams),
        "idle_cost": str(proposal.idle_cost),
        "excluded": rows(list(proposal.excluded) + blocked),
        "not_started": rows(proposal.not_started),
        "alternatives": rows(proposal.alternatives),
        "job_ids": list(proposal.job_ids),
        "gpus_started": proposal.gpus_started,
    }


def _trigger_held(policy: BurstPolicy, reason: str, now: datetime) -> bool:
    """Has the trigger held for the policy's window? Remembers since when it has held."""
    if not reason:
        BurstPolicy.objects.filter(pk=policy.pk).update(triggered_since=None)
        return False
    if policy.triggered_since is None:
        BurstPolicy.objects.filter(pk=policy.pk, triggered_since__isnull=True).update(triggered_since=now)
        policy.triggered_since = now
    return (now - policy.triggered_since).total_seconds() >= policy.trigger_window_s


def evaluate_policy(policy: BurstPolicy, now: datetime | None = None) -> BurstProposal | None:
    """Propose a burst if the policy's queue warrants one and it has no burst open; None otherwise."""
    now = now or timezone.now()
    jobs, blocked, teams = waiting_demand(policy.gpu_model, now)
    pending = sum(j.gpus for j in jobs)
    oldest = max((j.wait_s for j in jobs), default=0.0)
    reason = planner.trigger_reason(pending, oldest, planner.TriggerPolicy(policy.trigger_pending_gpus, policy.trigger_wait_s))
    if not _trigger_held(policy, reason, now) or policy.proposals.filter(state__in=OPEN_STATES).exists():
        return None
    proposal = plan_policy(policy, jobs, teams)
    if proposal is None or recently_rejected(policy, proposal.instance_type, now):
        return None
    with transaction.atomic():
        transaction_lock(LOCK)
        if policy.proposals.filter(state__in=OPEN_STATES).exists():  # another worker proposed meanwhile
            return None
        burst = _create(policy, proposal, blocked, reason, now)
        _announce(burst)
    if policy.auto_approve_below is not None and burst.projected_cost < policy.auto_approve_below:
        return approve(None, burst.pk, reason=f"projected cost under the auto-approval limit {policy.auto_approve_below}")
    return burst


def recently_rejected(policy: BurstPolicy, instance_type: str, now: datetime) -> bool:
    """Did an operator reject this policy's burst into the same pool within BURST_REJECT_COOLDOWN_S?

    Without this the next cycle (seconds later) proposes the very burst just rejected.
    """
    pool = InstanceType.objects.filter(name=instance_type).values_list("pool", flat=True).first()
    since = now - timedelta(seconds=settings.BURST_REJECT_COOLDOWN_S)
    return policy.proposals.filter(state=BurstState.REJECTED, pool=pool, decided_at__gt=since).exists()


def _create(
    policy: BurstPolicy, proposal: planner.Proposal, blocked: list[planner.Excluded], reason: str, now: datetime
) -> BurstProposal:
    instance = InstanceType.objects.get(name=proposal.instance_type)
    burst = BurstProposal.objects.create(
        policy=policy,
        instance_type=instance,
        pool=instance.pool,
        gpus_per_node=instance.gpus,
        price_per_hour=proposal.price_per_hour,
        nodes=proposal.nodes,
        duration_s=proposal.duration_s,
        projected_cost=proposal.cost,
        projection=projection_json(proposal, blocked),
        trigger=reason[:200],
        created_at=now,
        expires_at=now + timedelta(seconds=policy.proposal_ttl_s),
    )
    after = {"instance_type": instance.name, "nodes": proposal.nodes, "hours": str(proposal.hours), "cost": str(proposal.cost)}
    record(burst.pk, SYSTEM, "proposed", reason, to_state=BurstState.PROPOSED, after=after)
    return burst


def _announce(burst: BurstProposal) -> None:
    """E-mail the operators once the proposal is stored; in the portal it waits on the console's burst page."""
    addresses = sorted({u.email for u in operators() if u.email})
    subject = f"Burst proposal #{burst.pk}: {burst.nodes}× {burst.instance_type.name}, {burst.projected_cost} projected"
    body = (
        f"{burst.trigger}.\nProposed: {burst.nodes}× {burst.instance_type.name} for {burst.hours:.2f} h "
        f"at {burst.price_per_hour}/h = {burst.projected_cost}.\nDecide at /console/bursts/{burst.pk}/ "
        f"before {burst.expires_at:%Y-%m-%d %H:%M} UTC."
    )
    if addresses:
        transaction.on_commit(functools.partial(_send, subject, body, addresses))


def _send(subject: str, body: str, addresses: list[str]) -> None:
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, addresses)
    except OSError as exc:  # the proposal is stored and shown in the console; a mail outage must not undo it
        log.warning("burst e-mail %r not sent: %s", subject, exc)


# --- decisions -------------------------------------------------------------------------------


def _decider(user: Any) -> str:
    if user is None:
        return "auto-approve"
    if not is_operator(user):
        raise BurstForbidden("only operators approve or reject bursts")
    return str(user.username)


def parse_approval(burst: BurstProposal, nodes: Any, max_hours: Any) -> tuple[int, int, Decimal]:
    """The approved node count and duration (defaults: as proposed) and their cost; errors name the field."""
    try:
        count = burst.nodes if nodes in (None, "") else int(nodes)
    except (TypeError, ValueError):
        raise BurstActionError(f"nodes: a whole number 1-{burst.nodes}") from None
    try:
        duration = burst.duration_s if max_hours in (None, "") else int(Decimal(str(max_hours)) * 3600)
    except (InvalidOperation, ValueError):
        raise BurstActionError("max_hours: a number of hours") from None
    try:
        cost = planner.approval_cost(burst.price_per_hour, burst.nodes, burst.duration_s, count, duration)
    except planner.PlanError as exc:
        raise BurstActionError(str(exc)) from None
    return count, duration, cost


def approve(user: Any, burst_id: int, nodes: Any = None, max_hours: Any = None, reason: str = "") -> BurstProposal:
    """Approve (optionally fewer nodes or fewer hours) and start provisioning, in one transaction."""
    actor = _decider(user)
    now = timezone.now()
    with transaction.atomic():
        transaction_lock(LOCK)
        burst = _get(burst_id)
        _refuse_if_expired(burst, now)
        count, duration, cost = parse_approval(burst, nodes, max_hours)
        fields = dict(approved_nodes=count, approved_duration_s=duration, approved_cost=cost, decided_at=now, decided_by=actor)
        if not transition(burst, BurstState.APPROVED, actor, reason or "approved", decision_reason=reason[:300], **fields):
            raise BurstActionError(f"burst #{burst.pk} is {burst.get_state_display().lower()}, not waiting for approval")
        start_provisioning(burst, actor, now)
    return burst


def reject(user: Any, burst_id: int, reason: str) -> BurstProposal:
    actor = _decider(user)
    if not reason.strip():
        raise BurstActionError("reason: a reason is required to reject a burst")
    now = timezone.now()
    with transaction.atomic():
        transaction_lock(LOCK)
        burst = _get(burst_id)
        _refuse_if_expired(burst, now)
        if not transition(
            burst, BurstState.REJECTED, actor, reason, decided_at=now, decided_by=actor, decision_reason=reason[:300]
        ):
            raise BurstActionError(f"burst #{burst.pk} is {burst.get_state_display().lower()}, not waiting for approval")
    return burst


def _get(burst_id: int) -> BurstProposal:
    burst = BurstProposal.objects.select_related("instance_type", "policy").filter(pk=burst_id).first()
    if burst is None:
        raise BurstActionError(f"no burst #{burst_id}")
    return burst


def _refuse_if_expired(burst: BurstProposal, now: datetime) -> None:
    if burst.state == BurstState.PROPOSED and burst.expires_at <= now:
        transition(burst, BurstState.EXPIRED, SYSTEM, "nobody decided in time")
        raise BurstActionError(f"burst #{burst.pk} expired at {burst.expires_at:%Y-%m-%d %H:%M} UTC")


def expire_proposals(now: datetime) -> int:
    expired = 0
    for burst in BurstProposal.objects.filter(state=BurstState.PROPOSED, expires_at__lte=now):
        expired += transition(burst, BurstState.EXPIRED, SYSTEM, "nobody decided in time")
    return expired


# --- provisioning ----------------------------------------------------------------------------


def node_name(burst: BurstProposal, slot: int, attempt: int) -> str:
    base = f"{burst.pool}-b{burst.pk}-{slot:02d}"
    return base if attempt == 1 else f"{base}-r{attempt}"


def start_provisioning(burst: BurstProposal, actor: str, now: datetime) -> None:
    """Record the nodes to pay for, then ask the provider once this commits."""
    count = burst.approved_nodes or burst.nodes
    BurstNode.objects.bulk_create(
        [
            BurstNode(burst=burst, name=node_name(burst, slot, 1), pool=burst.pool, slot=slot, requested_at=now)
            for slot in range(1, count + 1)
        ]
    )
    transition(burst, BurstState.PROVISIONING, actor, f"requesting {count}× {burst.instance_type.name}")
    after_commit("bursting.tasks.provision_burst", burst.pk)


def provision(burst_id: int, provider: CloudProvider | None = None) -> int:
    """Ask the provider for every node the burst still waits for; returns how many requests were made."""
    provider = provider or get_provider()
    burst = _get(burst_id)
    if burst.state != BurstState.PROVISIONING:
        return 0
    asked = 0
    for node in BurstNode.objects.filter(burst=burst, status=NodeStatus.REQUESTED):
        try:
            provider.check(node.pool, burst.instance_type.gpu_model, burst.gpus_per_node)
            provider.request(node.name, node.pool, burst.instance_type.name)
            asked += 1
        except CapacityError as exc:  # counts as an attempt: the slot is asked for again under a new name
            node_failed(burst, node, str(exc))
        except BackendError as exc:
            if exc.retryable:  # the provider is unreachable: the same request goes out next cycle
                log.warning("burst #%s: %s; asking again next cycle", burst.pk, exc)
                continue
            node_failed(burst, node, str(exc))
    return asked


def node_failed(burst: BurstProposal, node: BurstNode, error: str) -> None:
    """Mark the node failed; ask for a replacement in its slot unless it has had all its attempts."""
    with transaction.atomic():
        if not BurstNode.objects.filter(pk=node.pk, status=NodeStatus.REQUESTED).update(
            status=NodeStatus.FAILED, error=error[:300]
        ):
            return
        record(burst.pk, SYSTEM, "node_failed", error, node=node.name)
        if node.attempt < settings.BURST_MAX_ATTEMPTS:
            retry = BurstNode.objects.create(
                burst=burst,
                name=node_name(burst, node.slot, node.attempt + 1),
                pool=node.pool,
                slot=node.slot,
                attempt=node.attempt + 1,
            )
            record(burst.pk, SYSTEM, "node_retry", f"attempt {retry.attempt} of {settings.BURST_MAX_ATTEMPTS}", node=retry.name)
            after_commit("bursting.tasks.provision_burst", burst.pk)
        else:
            record(burst.pk, SYSTEM, "node_given_up", f"after {node.attempt} attempts: {error}", node=node.name)


def settle(burst: BurstProposal, now: datetime) -> None:
    """A provisioning burst becomes active once no node is still booting, or failed if none came up."""
    if burst.state != BurstState.PROVISIONING or burst.burst_nodes.filter(status=NodeStatus.REQUESTED).exists():
        return
    ready = burst.burst_nodes.filter(status=NodeStatus.READY).count()
    if ready:
        ends = now + timedelta(seconds=burst.approved_duration_s or burst.duration_s)
        transition(
            burst, BurstState.ACTIVE, SYSTEM, f"{ready} of {burst.approved_nodes} nodes ready", active_at=now, ends_at=ends
        )
    else:
        errors = sorted(set(burst.burst_nodes.exclude(error="").values_list("error", flat=True)))
        message = f"no node came up after {settings.BURST_MAX_ATTEMPTS} attempts each: {'; '.join(errors)}"
        transition(burst, BurstState.FAILED, SYSTEM, message, error=message[:300], ended_at=now)


# --- reconciliation: the provider's view against the portal's ------------------------------


def reconcile(provider: CloudProvider, now: datetime) -> dict[str, int]:
    """Match every instance the provider has with a node the portal pays for, and settle differences."""
    seen = {i.name: i for i in provider.instances()}
    counts = {"ready": 0, "failed": 0, "orphans": 0, "lost": 0}
    nodes = {n.name: n for n in BurstNode.objects.select_related("burst", "burst__instance_type")}
    for name, instance in seen.items():
        node = nodes.get(name)
        if (node is None or node.status not in PAID_NODE_STATES) and instance.requested_as:
            node = _adopt(nodes, instance) or node  # a reused slot's name may still be on a released node
        if node is None or node.status not in PAID_NODE_STATES:
            counts["orphans"] += _release_orphan(provider, instance, node)
        elif node.status == NodeStatus.REQUESTED and instance.state == "running":
            counts["ready"] += BurstNode.objects.filter(pk=node.pk, status=NodeStatus.REQUESTED).update(
                status=NodeStatus.READY, ready_at=now
            )
            record(node.burst_id, SYSTEM, "node_ready", node=name)
        elif node.status == NodeStatus.REQUESTED and instance.state == "failed":
            provider.release(name)
            node_failed(node.burst, node, instance.error or "instance failed")
            counts["failed"] += 1
    for node in nodes.values():
        if node.status == NodeStatus.READY and node.name not in seen:
            BurstNode.objects.filter(pk=node.pk).update(
                status=NodeStatus.RELEASED, released_at=now, error="the provider no longer has it"
            )
            record(node.burst_id, SYSTEM, "node_lost", "the provider no longer has this node", node=node.name)
            counts["lost"] += 1
    return counts


def _adopt(nodes: dict[str, BurstNode], instance: Instance) -> BurstNode | None:
    """The provider named the node itself (Cluster API, Slurm's power-save slots): the portal's node takes that name."""
    node = nodes.get(instance.requested_as)
    if node is None or node.status != NodeStatus.REQUESTED:
        return node
    # Slurm's power-save slots come back under the same name for every burst: an earlier, released
    # node gives its name up (its row keeps `<name>~<id>`; its events keep the name they were written with).
    for earlier in BurstNode.objects.filter(name=instance.name).exclude(status__in=PAID_NODE_STATES):
        BurstNode.objects.filter(pk=earlier.pk).update(name=f"{earlier.name}~{earlier.pk}"[:120])
    if BurstNode.objects.filter(pk=node.pk, name=node.name).update(name=instance.name):
        record(node.burst_id, SYSTEM, "node_joined", f"requested as {node.name}", node=instance.name)
        node.name = instance.name
        nodes[instance.name] = node
    return node


def _release_orphan(provider: CloudProvider, instance: Instance, node: BurstNode | None) -> int:
    """An instance nobody pays for on the portal's side (a release that did not go through): release it."""
    if instance.state in ("failed", "terminated"):
        provider.release(instance.name)
        return 0
    provider.release(instance.name)
    record(
        node.burst_id if node else None,
        SYSTEM,
        "orphan_released",
        "the provider had a node the portal did not account for",
        node=instance.name,
    )
    return 1


# --- scale-down ------------------------------------------------------------------------------


def busy_nodes(names: list[str]) -> set[str]:
    busy: set[str] = set()
    for placement in Job.objects.filter(state__in=HOLDS_GPUS).values_list("placement", flat=True):
        busy.update(n for n in placement if n in names)
    return busy


def scale_down(burst: BurstProposal, provider: CloudProvider, now: datetime) -> int:
    """Release nodes idle for the policy's window; at the cap drain every node and release each once empty."""
    ready = list(burst.burst_nodes.filter(status=NodeStatus.READY))
    busy = busy_nodes([n.name for n in ready])
    at_cap = burst.ends_at is not None and now >= burst.ends_at
    released = 0
    for node in ready:
        if node.name in busy:
            BurstNode.objects.filter(pk=node.pk).update(idle_since=None)
            if at_cap and not node.draining:
                _drain(node, "the burst reached its cap")
            continue
        idle_since = node.idle_since or now
        if node.idle_since is None:
            BurstNode.objects.filter(pk=node.pk).update(idle_since=now)
        if at_cap or (now - idle_since).total_seconds() >= burst.policy.idle_release_s:
            released += release_node(node, provider, now, "the burst reached its cap" if at_cap else "idle")
    return released


# A burst node's `error` while a disruption budget keeps pods on it (so release knows to drain again).
DRAIN_BLOCKED = "drain blocked by a disruption budget: "


def _drain(node: BurstNode, reason: str) -> dict[str, str]:
    """Drain through the cluster app (the node's trail and drain report are in NodeEvent); returns the
    pods a disruption budget kept on it, each with the cluster's reason."""
    try:
        drained = cluster_services.drain(node.name, SYSTEM, f"burst #{node.burst_id}: {reason}")
    except cluster_services.NodeActionError as exc:
        log.info("burst node %s not drained: %s", node.name, exc)  # not synced into the portal yet: nothing to drain
        blocked: dict[str, str] = {}
    else:
        blocked = dict((cluster_services.last_drain_report(drained) or {}).get("blocked") or {})
    BurstNode.objects.filter(pk=node.pk).update(draining=True)
    return blocked


def release_node(node: BurstNode, provider: CloudProvider, now: datetime, why: str) -> int:
    """Drain the node, then give it back to the provider and stop paying for it.

    Pods a disruption budget keeps on the node keep it: releasing would take them down regardless.
    The node waits, drained again each cycle (the budget may allow the eviction by then), and the
    operator is told which pods and why once per change (a `release_waits` burst event, the node's
    error on the burst page, and the drain report on the node's page).
    """
    if not node.draining or node.error.startswith(DRAIN_BLOCKED):
        blocked = _drain(node, why)
        if blocked:
            message = (DRAIN_BLOCKED + "; ".join(f"{pod} ({cause})" for pod, cause in sorted(blocked.items())))[:300]
            if BurstNode.objects.filter(pk=node.pk).exclude(error=message).update(error=message):
                record(node.burst_id, SYSTEM, "release_waits", message, node=node.name, after={"blocked": blocked})
            return 0
        BurstNode.objects.filter(pk=node.pk, error__startswith=DRAIN_BLOCKED).update(error="")
    if busy_nodes([node.name]):  # a job was placed between the idle check and the drain: wait for it
        return 0
    provider.release(node.name)
    if BurstNode.objects.filter(pk=node.pk, status=NodeStatus.READY).update(status=NodeStatus.RELEASED, released_at=now):
        record(node.burst_id, SYSTEM, "node_released", why, node=node.name)
        return 1
    return 0


def finish_if_empty(burst: BurstProposal, now: datetime) -> None:
    if burst.state == BurstState.ACTIVE and not burst.burst_nodes.filter(status__in=PAID_NODE_STATES).exists():
        transition(burst, BurstState.ENDED, SYSTEM, "every node released", ended_at=now)


# --- Slurm's power-save programs -------------------------------------------------------------


def slurm_power(user: Any, act: str, names: list[str]) -> PowerAnswer:
    """ResumeProgram or SuspendProgram named these nodes (operators' tokens only); what was done and refused."""
    if not is_operator(user):
        raise BurstForbidden("only operators' tokens may resume or suspend cloud nodes")
    provider = get_provider()
    if not isinstance(provider, SlurmPowerSave):
        raise BurstActionError(f"nodes: the burst provider is {type(provider).__name__}, not Slurm's power saving")
    with transaction.atomic():
        transaction_lock(LOCK)
        answer = provider.resume(names) if act == "resume" else provider.suspend(names)
        for reason in answer.refused.values():
            log.warning("Slurm %s refused: %s", act, reason)
        record(
            None,
            str(user.username),
            f"slurm_{act}",
            _power_summary(answer),
            after={"done": answer.done, "refused": answer.refused},
        )
    return answer


def _power_summary(answer: PowerAnswer) -> str:
    refused = f"; refused {', '.join(sorted(answer.refused))}" if answer.refused else ""
    return f"{', '.join(answer.done) or 'nothing'}{refused}"


# --- the cycle -------------------------------------------------------------------------------


def cycle(now: datetime | None = None, provider: CloudProvider | None = None) -> dict[str, int]:
    """One burst cycle: expire, reconcile, provision, settle, scale down, end, then propose."""
    now = now or timezone.now()
    provider = provider or get_provider()
    expired = expire_proposals(now)
    counts = reconcile(provider, now)
    for burst in BurstProposal.objects.filter(state=BurstState.PROVISIONING):
        provision(burst.pk, provider)
    if counts["ready"] or counts["lost"]:
        cluster_services.sync_nodes()
        after_commit("jobs.tasks.admission_cycle")
    for burst in BurstProposal.objects.filter(state=BurstState.PROVISIONING):
        settle(burst, now)
    released = 0
    for burst in BurstProposal.objects.filter(state=BurstState.ACTIVE).select_related("policy"):
        released += scale_down(burst, provider, now)
        finish_if_empty(burst, now)
    if released:
        cluster_services.sync_nodes()
    proposed = sum(evaluate_policy(p, now) is not None for p in BurstPolicy.objects.filter(enabled=True))
    return {"expired": expired, "proposed": proposed, "released": released, **counts}
