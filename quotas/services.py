"""Quotas, priority classes and usage history as stored; the admission scheduler reads them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Sum

from cluster import services as cluster_services
from portal.access import is_operator, leads_team
from portal.locks import transaction_lock
from portal.models import Department, Team
from quotas.lending import QuotaProposal, check_quota
from quotas.models import DepartmentQuota, PriorityClass, QuotaChange, TeamQuota, TeamUsage


def quotas_by_team_and_model() -> dict[tuple[str, str], TeamQuota]:
    return {(q.team.slug, q.gpu_model): q for q in TeamQuota.objects.select_related("team")}


def priority_classes() -> list[PriorityClass]:
    return list(PriorityClass.objects.all())


def class_teams() -> dict[str, frozenset[str]]:
    """Each priority class's teams (slugs) where an operator limited it; a class not listed is open to every team."""
    limited: dict[str, set[str]] = {}
    for name, slug in PriorityClass.teams.through.objects.values_list("priorityclass__name", "team__slug"):
        limited.setdefault(name, set()).add(slug)
    return {name: frozenset(slugs) for name, slugs in limited.items()}


def usage_history() -> dict[str, tuple[float, datetime]]:
    """Each team's stored decayed usage (GPU-seconds) and when it was last brought up to date."""
    return {u.team.slug: (u.gpu_seconds, u.updated_at) for u in TeamUsage.objects.select_related("team")}


def store_usage(values: Mapping[str, float], at: datetime) -> None:
    teams = dict(Team.objects.filter(slug__in=list(values)).values_list("slug", "id"))
    for slug, value in values.items():
        if slug in teams:
            TeamUsage.objects.update_or_create(team_id=teams[slug], defaults={"gpu_seconds": value, "updated_at": at})


class QuotaError(Exception):
    """A quota change was refused; `errors` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


Value = int | bool | None


def _as_dict(quota: TeamQuota) -> dict[str, Value]:
    return {
        "guarantee": quota.guarantee,
        "limit": quota.limit,
        "weight": quota.weight,
        "lendable": quota.lendable,
        "lead_max_limit": quota.lead_max_limit,
    }


class QuotaForbidden(Exception):
    """The user may not change this team's quota."""


def set_quota(
    user: Any,
    *,
    team: Team,
    gpu_model: str,
    changes: Mapping[str, Value],
    reason: str = "",
    creating: bool = False,
) -> TeamQuota:
    """Validate and apply a quota change in one transaction, with an audit row; effective next cycle.

    The user's role decides what may change, here and nowhere else: operators create quotas and
    change every field; the team's lead changes only the limit (up to the ceiling operators set)
    and whether the team lends; anyone else nothing (QuotaForbidden).
    """
    by_operator = is_operator(user)
    if not by_operator and (creating or not leads_team(user, team.pk)):
        raise QuotaForbidden(
            "only operators create quotas" if creating else "only the team's lead or an operator may change its quota"
        )
    capacity = cluster_services.capacity_by_model().get(gpu_model)
    if capacity is None:
        raise QuotaError({"gpu_model": [f"the grid has no {gpu_model!r} GPUs"]})
    allowed = {"guarantee", "limit", "weight", "lendable"} | ({"lead_max_limit"} if by_operator else set())
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise QuotaError({name: ["cannot be changed here"] for name in unknown})
    with transaction.atomic():
        transaction_lock(f"quotas-{gpu_model}")  # guarantees of one model are checked against each other
        current = TeamQuota.objects.select_for_update().filter(team=team, gpu_model=gpu_model).first()
        before = _as_dict(current) if current else None
        blank: dict[str, Value] = {"guarantee": 0, "limit": 0, "weight": 1, "lendable": True, "lead_max_limit": None}
        merged = {**(before or blank), **changes}
        proposal = _proposal(merged)
        others = TeamQuota.objects.filter(gpu_model=gpu_model).exclude(team=team).aggregate(s=Sum("guarantee"))["s"] or 0
        errors = check_quota(
            proposal,
            model=gpu_model,
            capacity=capacity.total_gpus,
            other_guarantees=others,
            by_operator=by_operator,
            current=_proposal(before) if before else None,
            lead_ceiling=current.lead_max_limit if current else None,
        )
        errors.update(_department_errors(team, gpu_model, proposal.guarantee))
        if errors:
            raise QuotaError(errors)
        quota, _ = TeamQuota.objects.update_or_create(
            team=team,
            gpu_model=gpu_model,
            defaults={
                "guarantee": proposal.guarantee,
                "limit": proposal.limit,
                "weight": proposal.weight,
                "lendable": proposal.lendable,
                "lead_max_limit": _whole_or_none(merged.get("lead_max_limit")),
            },
        )
        QuotaChange.objects.create(
            actor=user.username, team=team, gpu_model=gpu_model, before=before, after=_as_dict(quota), reason=reason[:300]
        )
    return quota


def _proposal(values: Mapping[str, Value]) -> QuotaProposal:
    return QuotaProposal(
        guarantee=_whole(values, "guarantee"),
        limit=_whole(values, "limit"),
        weight=_whole(values, "weight"),
        lendable=bool(values["lendable"]),
    )


def _whole(values: Mapping[str, Value], key: str) -> int:
    value = values.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise QuotaError({key: ["must be a whole number"]})
    return value


def _whole_or_none(value: Value) -> int | None:
    return None if value is None or isinstance(value, bool) else int(value)


# --- departments -----------------------------------------------------------------------------------


def _department_errors(team: Team, gpu_model: str, guarantee: int) -> dict[str, list[str]]:
    """A team's guarantee is carved out of its department's: their teams' guarantees add up to at most it."""
    if team.department_id is None:
        return {}
    cap = DepartmentQuota.objects.filter(department_id=team.department_id, gpu_model=gpu_model).first()
    if cap is None:
        return {}
    mates = TeamQuota.objects.filter(team__department_id=team.department_id, gpu_model=gpu_model).exclude(team=team)
    total = (mates.aggregate(s=Sum("guarantee"))["s"] or 0) + guarantee
    if total <= cap.guarantee:
        return {}
    department = cap.department.slug
    return {
        "guarantee": [
            f"department {department}'s teams would hold {total} guaranteed {gpu_model} GPUs; "
            f"its guarantee is {cap.guarantee} (this team may have at most {cap.guarantee - total + guarantee})"
        ]
    }


def set_department_quota(user: Any, *, department: Department, gpu_model: str, guarantee: int) -> DepartmentQuota:
    """Set a department's guarantee of a model (operators only); it must cover what its teams are guaranteed now."""
    if not is_operator(user):
        raise QuotaForbidden("only operators set a department's guarantee")
    with transaction.atomic():
        transaction_lock(f"quotas-{gpu_model}")
        errors = department_quota_errors(department, gpu_model, guarantee)
        if errors:
            raise QuotaError(errors)
        quota, _ = DepartmentQuota.objects.update_or_create(
            department=department, gpu_model=gpu_model, defaults={"guarantee": guarantee}
        )
    return quota


def department_quota_errors(department: Department, gpu_model: str, guarantee: object) -> dict[str, list[str]]:
    """What is wrong with this department guarantee, by field (empty: nothing)."""
    if isinstance(guarantee, bool) or not isinstance(guarantee, int) or guarantee < 0:
        return {"guarantee": ["must be a whole number, 0 or more"]}
    capacity = cluster_services.capacity_by_model().get(gpu_model)
    if capacity is None:
        return {"gpu_model": [f"the grid has no {gpu_model!r} GPUs"]}
    if guarantee > capacity.total_gpus:
        return {"guarantee": [f"{guarantee} is more than the grid's {capacity.total_gpus} {gpu_model} GPUs"]}
    held = TeamQuota.objects.filter(team__department=department, gpu_model=gpu_model).aggregate(s=Sum("guarantee"))["s"] or 0
    if guarantee < held:
        return {"guarantee": [f"its teams are guaranteed {held} {gpu_model} GPUs now; lower theirs first (at least {held})"]}
    return {}


def departments_of_teams() -> dict[str, str]:
    """Team slug -> department slug, for teams in a department."""
    return dict(Team.objects.filter(department__isnull=False).values_list("slug", "department__slug"))
