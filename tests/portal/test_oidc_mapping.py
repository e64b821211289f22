"""Team mapping from an identity provider's claim: the pure rules, then their application to a user."""

from __future__ import annotations

import pytest

from portal.models import Membership, Team, TeamRole, User
from portal.oidc import ClaimRules, claimed_groups, map_claims, sync_memberships, unique_username, username_candidate

KNOWN = {"vision", "render", "ops-lead"}
RULES = ClaimRules(teams_claim="groups", team_prefix="grid-", lead_suffix="-lead", operator_group="grid-operators")


def test_it_maps_prefixed_groups_to_teams_and_lead_groups_to_leads() -> None:
    mapping = map_claims({"groups": ["grid-vision", "grid-render-lead", "staff"]}, RULES, KNOWN)
    assert mapping.roles == {"vision": TeamRole.RESEARCHER, "render": TeamRole.LEAD}
    assert mapping.unknown == [] and mapping.invalid == []


def test_it_ignores_groups_without_the_prefix_and_reports_unknown_teams() -> None:
    mapping = map_claims({"groups": ["vision", "grid-nosuchteam", "other-render"]}, RULES, KNOWN)
    assert mapping.roles == {}
    assert mapping.unknown == ["grid-nosuchteam"]


def test_it_reports_names_that_are_no_valid_slug() -> None:
    groups = ["grid-", "grid-Vi sion", "grid-9lives", "grid-x", "grid-a_b", "grid-" + "a" * 41]
    mapping = map_claims({"groups": groups}, RULES, KNOWN)
    assert mapping.roles == {}
    assert mapping.invalid == ["grid-", "grid-vi sion", "grid-9lives", "grid-x", "grid-a_b", "grid-" + "a" * 41]


def test_duplicates_and_case_collapse_and_the_higher_role_wins() -> None:
    claims = {"groups": ["grid-vision", "GRID-VISION", "grid-vision-lead", "grid-vision", "/grid-render"]}
    mapping = map_claims(claims, RULES, KNOWN)
    assert mapping.roles == {"vision": TeamRole.LEAD, "render": TeamRole.RESEARCHER}
    lead_first = map_claims({"groups": ["grid-vision-lead", "grid-vision"]}, RULES, KNOWN)
    assert lead_first.roles == {"vision": TeamRole.LEAD}


def test_a_lead_suffix_is_a_team_of_its_own_when_the_base_team_does_not_exist() -> None:
    mapping = map_claims({"groups": ["grid-ops-lead"]}, RULES, KNOWN)
    assert mapping.roles == {"ops-lead": TeamRole.RESEARCHER}
    no_suffix = ClaimRules(team_prefix="grid-", lead_suffix="")
    assert map_claims({"groups": ["grid-vision-lead"]}, no_suffix, KNOWN).unknown == ["grid-vision-lead"]


def test_without_a_prefix_every_group_is_read() -> None:
    mapping = map_claims({"groups": ["vision", "staff"]}, ClaimRules(), KNOWN)
    assert mapping.roles == {"vision": TeamRole.RESEARCHER}
    assert mapping.unknown == ["staff"]


def test_the_operator_group_sets_and_clears_the_flag_only_when_configured() -> None:
    assert map_claims({"groups": ["grid-operators"]}, RULES, KNOWN).operator is True
    assert map_claims({"groups": ["grid-vision"]}, RULES, KNOWN).operator is False
    assert map_claims({"groups": ["grid-operators"]}, RULES, KNOWN).roles == {}  # not read as a team too
    assert map_claims({"groups": ["grid-operators"]}, ClaimRules(team_prefix="grid-"), KNOWN).operator is None


def test_a_missing_claim_changes_nothing_and_an_empty_one_clears() -> None:
    missing = map_claims({"email": "a@example.org"}, RULES, KNOWN)
    assert missing.roles is None
    assert missing.operator is False  # no groups: not in the operator group either
    assert map_claims({"groups": []}, RULES, KNOWN).roles == {}


def test_odd_claim_values_are_read_safely() -> None:
    assert claimed_groups({"groups": "grid-vision"}, "groups") == ["grid-vision"]
    assert claimed_groups({"groups": {"grid-vision": True}}, "groups") == []
    assert claimed_groups({"groups": [1, None, "", " grid-vision ", "x" * 300]}, "groups") == ["grid-vision"]
    assert claimed_groups({"roles": ["a"]}, "groups") is None


def test_usernames_come_from_preferred_username_then_the_email() -> None:
    assert username_candidate("Ada.Lovelace", "x@example.org") == "ada.lovelace"
    assert username_candidate("  ada lovelace!", None) == "ada-lovelace"
    assert username_candidate(None, "grace@example.org") == "grace"
    assert username_candidate("///", 42) == ""
    assert len(username_candidate("a" * 500, None)) <= 146


def test_a_taken_username_gets_the_first_free_suffix() -> None:
    assert unique_username("ada", []) == "ada"
    assert unique_username("ada", ["ADA", "ada-2"]) == "ada-3"


@pytest.fixture
def teams(db: None) -> dict[str, Team]:
    return {slug: Team.objects.create(slug=slug, name=slug.title()) for slug in ("vision", "render", "legacy")}


def test_sync_adds_removes_and_re_roles_memberships_and_sets_the_operator(teams: dict[str, Team]) -> None:
    user = User.objects.create_user(username="ada", email="ada@example.org")
    Membership.objects.create(user=user, team=teams["legacy"])
    Membership.objects.create(user=user, team=teams["vision"], role=TeamRole.LEAD)
    claims = {"groups": ["grid-vision", "grid-render-lead", "grid-nosuchteam", "grid-operators"]}

    result = sync_memberships(user, claims, RULES)

    roles = dict(Membership.objects.filter(user=user).values_list("team__slug", "role"))
    assert roles == {"vision": TeamRole.RESEARCHER, "render": TeamRole.LEAD}
    assert (result.added, result.removed, result.changed) == (["render"], ["legacy"], ["vision"])
    user.refresh_from_db()
    assert user.is_operator
    assert not Team.objects.filter(slug="nosuchteam").exists()
    assert sorted(user.team_slugs.values()) == ["render", "vision"]  # the per-request cache was dropped


def test_sync_without_the_claim_leaves_memberships_alone(teams: dict[str, Team]) -> None:
    user = User.objects.create_user(username="ada", email="ada@example.org", is_operator=True)
    Membership.objects.create(user=user, team=teams["legacy"])
    result = sync_memberships(user, {"sub": "ada"}, ClaimRules(team_prefix="grid-"))
    assert Membership.objects.filter(user=user).count() == 1
    assert result.removed == [] and not result.operator_changed


def test_sync_runs_the_token_cache_signals(teams: dict[str, Team], monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.models.signals import post_delete, post_save

    seen: list[str] = []

    def record(sender: type, **kwargs: object) -> None:
        seen.append(sender.__name__)

    post_save.connect(record, sender=Membership, dispatch_uid="test-oidc-save")
    post_delete.connect(record, sender=Membership, dispatch_uid="test-oidc-delete")
    try:
        user = User.objects.create_user(username="ada", email="ada@example.org")
        Membership.objects.create(user=user, team=teams["legacy"])
        seen.clear()
        sync_memberships(user, {"groups": ["grid-vision"]}, RULES)
    finally:
        post_save.disconnect(dispatch_uid="test-oidc-save", sender=Membership)
        post_delete.disconnect(dispatch_uid="test-oidc-delete", sender=Membership)
    assert seen == ["Membership", "Membership"]  # one delete, one create
