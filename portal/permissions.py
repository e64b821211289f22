"""One permission mechanism for every model: `Model.objects.restrict(user, action)`.

Each model's queryset answers "which rows may this user see (VIEW) or change (CHANGE)"; pages,
the API, websockets, exports and services ask it instead of writing the rule again. A model
states its rule in `access_rule(user, action)`, built from the role predicates and team filters
below; a model that states none is for operators only. Anonymous users get nothing, always.
"""

from __future__ import annotations

from typing import Any, Self, TypeVar, cast

from django.db import models
from django.db.models import Q

VIEW = "view"
CHANGE = "change"
ACTIONS = (VIEW, CHANGE)
Rule = Q | bool  # True: every row; False: none; a Q: the rows it matches

M = TypeVar("M", bound=models.Model)


def is_operator(user: Any) -> bool:
    """Operators run the grid: they see and act on every team's jobs, nodes, quotas and bursts."""
    return bool(getattr(user, "is_authenticated", False) and (user.is_operator or user.is_superuser))


def is_finance(user: Any) -> bool:
    """Finance sees every team's costs: usage, invoices, budgets."""
    return bool(getattr(user, "is_authenticated", False) and (user.is_finance or user.is_superuser))


def of_member_teams(user: Any, field: str = "team_id") -> Q:
    """Rows of the teams the user belongs to."""
    return Q(**{f"{field}__in": list(user.team_ids)})


def of_led_teams(user: Any, field: str = "team_id") -> Q:
    """Rows of the teams the user leads."""
    return Q(**{f"{field}__in": list(user.lead_team_ids)})


def allows(rule: Rule, row: Any) -> bool:
    """Whether `row` (a model instance, or any object with the rule's fields as attributes) is among
    the rows `rule` selects, decided in memory.

    The live pages check every pushed message against the model's own rule this way, with facts
    cached per process, instead of asking the database per socket per message. Only the lookups the
    rules use are understood (`field`, `field__exact`, `field__in`); any other raises, so a rule that
    grows past them fails loudly in tests rather than deciding wrongly.
    """
    if isinstance(rule, bool):
        return rule
    results = []
    for child in cast(list[Q | tuple[str, Any]], rule.children):
        if isinstance(child, Q):
            results.append(allows(child, row))
            continue
        lookup, expected = child
        field, _, op = lookup.partition("__")
        if op not in ("", "exact", "in"):
            raise ValueError(f"allows() does not evaluate the lookup {lookup!r}")
        value = getattr(row, field)
        results.append(value in expected if op == "in" else value == expected)
    if rule.connector not in (Q.AND, Q.OR):
        raise ValueError(f"allows() does not evaluate the connector {rule.connector!r}")
    matched = all(results) if rule.connector == Q.AND else any(results)
    return matched != rule.negated


class RestrictedQuerySet(models.QuerySet[M]):
    def restrict(self, user: Any, action: str = VIEW) -> Self:
        """The rows `user` may see (VIEW) or change (CHANGE), by the model's rule."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
        if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
            return self.none()
        rule: Rule = self.model.access_rule(user, action)  # type: ignore[attr-defined]
        if rule is True:
            return self.all()
        if rule is False:
            return self.none()
        return self.filter(rule)


class RestrictedModel(models.Model):
    """Base of every model of the project: `objects.restrict(user, action)` and a rule to answer it."""

    objects = RestrictedQuerySet.as_manager()

    class Meta:
        abstract = True

    @classmethod
    def access_rule(cls, user: Any, action: str) -> Rule:
        """Who may see or change which rows; the default: operators, all of them; nobody else, none."""
        return is_operator(user)
