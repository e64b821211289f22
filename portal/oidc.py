"""Single sign-on: team memberships and the operator role from an identity provider's claims.

The mapping is a pure function (`map_claims`) over plain data; `sync_memberships` applies its
answer to one user in one transaction through the models' normal save and delete paths, so the
token cache and live pages hear of every change (portal/apps.py).

Rules (docs/security.md, "Single sign-on"):
- the claim named by OIDC_TEAMS_CLAIM (default "groups") is a list of group names, or one name;
- a name is read only when it starts with OIDC_TEAM_PREFIX (default: none, every name is read);
  a leading "/" (Keycloak's full group path) is dropped and names are compared in lower case;
- what follows the prefix is a team slug (researcher), or a slug followed by OIDC_LEAD_SUFFIX
  (default "-lead") for the team's lead, when that team exists; the higher role wins;
- names that are no existing team, or no valid slug, are ignored and reported (teams are never
  created from claims);
- the group OIDC_OPERATOR_GROUP, when set, grants the operator role and its absence takes it away;
- a token without the claim at all changes nothing (a provider that stopped sending groups must
  not empty every team); an empty list removes every membership.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from portal.models import Membership, Team, TeamRole, User

logger = logging.getLogger(__name__)

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")  # the same rule as portal.models.SLUG_VALIDATOR
ROLE_RANK = {TeamRole.RESEARCHER: 0, TeamRole.LEAD: 1}
MAX_GROUPS = 1000  # a claim longer than this is a misconfigured provider, not a person's teams
MAX_GROUP_LENGTH = 255


@dataclass(frozen=True)
class ClaimRules:
    """How group names in a claim become teams and roles (from the OIDC_* settings)."""

    teams_claim: str = "groups"
    team_prefix: str = ""
    lead_suffix: str = "-lead"
    operator_group: str = ""

    @classmethod
    def from_settings(cls) -> ClaimRules:
        return cls(
            teams_claim=getattr(settings, "OIDC_TEAMS_CLAIM", "groups"),
            team_prefix=getattr(settings, "OIDC_TEAM_PREFIX", "").lower(),
            lead_suffix=getattr(settings, "OIDC_LEAD_SUFFIX", "-lead").lower(),
            operator_group=getattr(settings, "OIDC_OPERATOR_GROUP", "").lower(),
        )


@dataclass(frozen=True)
class ClaimMapping:
    """What one sign-in's claims say: the user's teams and roles, the operator flag, what was ignored.

    `roles` is None when the token had no teams claim at all (memberships stay as they are);
    `operator` is None when no operator group is configured (the flag stays as it is).
    """

    roles: dict[str, str] | None
    operator: bool | None
    unknown: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def claimed_groups(claims: Mapping[str, Any], claim: str) -> list[str] | None:
    """The group names in `claims[claim]`, normalised; None when the claim is missing."""
    if claim not in claims:
        return None
    raw = claims[claim]
    values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    groups: list[str] = []
    for value in values[:MAX_GROUPS]:
        if isinstance(value, str) and 0 < len(value) <= MAX_GROUP_LENGTH:
            name = value.strip().lstrip("/").lower()
            if name and name not in groups:
                groups.append(name)
    return groups


def map_claims(claims: Mapping[str, Any], rules: ClaimRules, known_slugs: Collection[str]) -> ClaimMapping:
    """Read a user's teams, roles and operator flag from the claims (pure: no ORM, no settings)."""
    groups = claimed_groups(claims, rules.teams_claim)
    operator = None
    if rules.operator_group:
        operator = groups is not None and rules.operator_group in groups
    if groups is None:
        return ClaimMapping(roles=None, operator=operator)
    roles: dict[str, str] = {}
    unknown: list[str] = []
    invalid: list[str] = []
    for group in groups:
        if group == rules.operator_group or not group.startswith(rules.team_prefix):
            continue
        name = group[len(rules.team_prefix) :]
        slug, role = _team_and_role(name, rules.lead_suffix, known_slugs)
        if not SLUG_PATTERN.match(slug):
            invalid.append(group)
        elif slug not in known_slugs:
            unknown.append(group)
        elif ROLE_RANK[TeamRole(role)] >= ROLE_RANK[TeamRole(roles.get(slug, role))]:
            roles[slug] = role
    return ClaimMapping(roles=roles, operator=operator, unknown=unknown, invalid=invalid)


def _team_and_role(name: str, lead_suffix: str, known_slugs: Collection[str]) -> tuple[str, str]:
    # "vision-lead" leads "vision" when that team exists; otherwise it is read as a slug of its own.
    if lead_suffix and name.endswith(lead_suffix):
        base = name[: -len(lead_suffix)]
        if base in known_slugs:
            return base, TeamRole.LEAD
    return name, TeamRole.RESEARCHER


@dataclass(frozen=True)
class SyncResult:
    """What a sign-in changed: team slugs joined, left and re-roled, and the operator flag."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    operator_changed: bool


def sync_memberships(user: User, claims: Mapping[str, Any], rules: ClaimRules | None = None) -> SyncResult:
    """Set the user's memberships (and operator flag) to exactly what the claims say, in one transaction."""
    rules = rules or ClaimRules.from_settings()
    with transaction.atomic():
        # Two sign-ins of one user at once take turns here, so neither sees the other's half-done set.
        User.objects.select_for_update().filter(pk=user.pk).first()
        teams = dict(Team.objects.values_list("slug", "pk"))
        mapping = map_claims(claims, rules, teams.keys())
        _log_ignored(user, mapping)
        added: list[str] = []
        removed: list[str] = []
        changed: list[str] = []
        if mapping.roles is not None:
            added, removed, changed = _apply_roles(user, mapping.roles, teams)
        operator_changed = mapping.operator is not None and mapping.operator != user.is_operator
        if operator_changed:
            assert mapping.operator is not None
            user.is_operator = mapping.operator
            user.save(update_fields=["is_operator"])  # post_save drops the user's cached tokens
    if added or removed or changed or operator_changed:
        logger.info(
            "oidc sign-in of %s: joined %s, left %s, role changed in %s, operator %s",
            user.username,
            added,
            removed,
            changed,
            user.is_operator,
        )
    return SyncResult(added=added, removed=removed, changed=changed, operator_changed=operator_changed)


def _apply_roles(user: User, roles: dict[str, str], teams: dict[str, int]) -> tuple[list[str], list[str], list[str]]:
    # One save or delete per changed membership, never a bulk call: the signals must run.
    current = {m.team.slug: m for m in Membership.objects.filter(user=user).select_related("team")}
    removed = sorted(slug for slug in current if slug not in roles)
    for slug in removed:
        current[slug].delete()
    changed = []
    for slug, membership in sorted(current.items()):
        if slug in roles and membership.role != roles[slug]:
            membership.role = roles[slug]
            membership.save(update_fields=["role"])
            changed.append(slug)
    added = sorted(slug for slug in roles if slug not in current)
    for slug in added:
        Membership.objects.create(user=user, team_id=teams[slug], role=roles[slug])
    for cached in ("_team_slugs", "_lead_team_ids"):
        user.__dict__.pop(cached, None)
    return added, removed, changed


def _log_ignored(user: User, mapping: ClaimMapping) -> None:
    if mapping.roles is None:
        logger.warning("oidc sign-in of %s: the token has no teams claim; memberships left as they are", user.username)
    if mapping.unknown:
        logger.warning("oidc sign-in of %s: ignored groups that name no team: %s", user.username, mapping.unknown)
    if mapping.invalid:
        logger.warning("oidc sign-in of %s: ignored groups that are no valid team slug: %s", user.username, mapping.invalid)


USERNAME_PATTERN = re.compile(r"[^a-z0-9_.@+-]+")
USERNAME_MAX = 150


def username_candidate(preferred: object, email: object) -> str:
    """A valid username from preferred_username (or the e-mail's local part); empty if neither gives one."""
    for raw in (preferred, email.split("@")[0] if isinstance(email, str) else None):
        if isinstance(raw, str):
            name = USERNAME_PATTERN.sub("-", raw.strip().lower()).strip("-.")[: USERNAME_MAX - 4]
            if name:
                return name
    return ""


def unique_username(base: str, taken: Collection[str]) -> str:
    """`base`, or `base-2`, `base-3`… : the first not in `taken` (compared in lower case)."""
    lowered = {name.lower() for name in taken}
    if base.lower() not in lowered:
        return base
    suffix = 2
    while f"{base}-{suffix}".lower() in lowered:
        suffix += 1
    return f"{base}-{suffix}"
