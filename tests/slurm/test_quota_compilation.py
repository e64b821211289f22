"""Quotas and priority classes compiled to Slurm accounts and QOS, and the diff (pure: no Slurm needed)."""

from __future__ import annotations

import pytest

from quotas.slurm import (
    ClassInput,
    SlurmState,
    TeamInput,
    compile_plan,
    diff,
    duration_s,
    parse_associations,
    parse_organizations,
    parse_qos,
)

CLASSES = [ClassInput("critical", 100, False), ClassInput("standard", 50, False), ClassInput("preemptible", 10, True)]
TEAMS = [TeamInput("vision", ("alice", "bob"), (("a100", 12, 2), ("h100", 4, 1)))]


def test_teams_become_accounts_with_fairshare_and_gpu_limits_per_model() -> None:
    (account,) = compile_plan(TEAMS, CLASSES, 30).accounts
    assert account.name == "vision" and account.fairshare == 3
    assert account.grp_tres == (("gres/gpu:a100", 12), ("gres/gpu:h100", 4))
    assert account.users == ("alice", "bob") and account.default_qos == "standard"
    assert account.qos == ("critical", "preemptible", "standard")


def test_priority_classes_become_qos_that_preempt_lower_preemptible_ones_with_grace() -> None:
    qos = {q.name: q for q in compile_plan([], CLASSES, 30).qos}
    assert qos["critical"].priority == 100 and qos["critical"].preempt == ("preemptible",)
    assert qos["preemptible"].preempt_mode == "cancel" and qos["preemptible"].grace_s == 30
    assert qos["standard"].preempt == ("preemptible",) and qos["standard"].grace_s == 0


def test_an_empty_slurm_gets_qos_first_then_accounts_then_users() -> None:
    summaries = [c.summary for c in diff(compile_plan(TEAMS, CLASSES, 30), _state("", ""))]
    assert summaries[0].startswith("add QOS") and summaries.index("add account vision under root") > 2
    assert summaries[-2:] == ["add user alice to account vision", "add user bob to account vision"]


def test_a_matching_slurm_needs_no_change_and_a_drifted_one_is_corrected() -> None:
    plan = compile_plan(TEAMS, CLASSES, 30)
    qos = "critical|100|preemptible|cluster|00:00:00\nstandard|50|preemptible|cluster|00:00:00\npreemptible|10||cancel|00:00:30\n"
    assoc = "vision||3|gres/gpu:a100=12,gres/gpu:h100=4|critical,preemptible,standard|standard\nvision|alice|1||x|\nvision|bob|1||x|\n"
    assert diff(plan, _state(qos, assoc)) == []
    drifted = assoc.replace("a100=12", "a100=99") + "vision|mallory|1||x|\n"
    changes = diff(plan, _state(qos, drifted))
    assert [c.sacctmgr[:4] for c in changes] == [
        ("modify", "account", "where", "name=vision"),
        ("remove", "user", "where", "name=mallory"),
    ]
    assert "GrpTRES=gres/gpu:a100=12,gres/gpu:h100=4" in changes[0].sacctmgr


def test_a_limit_the_portal_dropped_is_cleared_in_slurm() -> None:
    plan = compile_plan([TeamInput("vision", (), (("a100", 12, 1),))], CLASSES, 30)
    assoc = "vision||1|gres/gpu:a100=12,gres/gpu:h100=4|critical,preemptible,standard|standard\n"
    (change,) = [c for c in diff(plan, _state("", assoc)) if c.sacctmgr[0] == "modify" and c.sacctmgr[1] == "account"]
    assert "GrpTRES=gres/gpu:a100=12,gres/gpu:h100=-1" in change.sacctmgr


def test_members_without_a_valid_unix_name_are_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="team vision: member 'Bob Smith' has no valid Unix account name"):
        compile_plan([TeamInput("vision", ("Bob Smith",), ())], CLASSES, 30)


def test_durations_parse() -> None:
    assert [duration_s(t) for t in ("", "00:00:30", "05:00", "1-00:00:01")] == [0, 30, 300, 86401]


def _state(qos: str, assoc: str, managed: frozenset[str] | None = None) -> SlurmState:
    """Slurm's state; every account in it made by the portal unless `managed` says which."""
    accounts = parse_associations(assoc)
    return SlurmState(parse_qos(qos), accounts, frozenset(accounts) if managed is None else managed)


def test_the_portals_accounts_whose_team_or_department_is_gone_are_removed_children_first() -> None:
    plan = compile_plan([TeamInput("vision", ("alice",), (("a100", 12, 2),))], CLASSES, 30)
    qos = "critical|100|preemptible|cluster|00:00:00\nstandard|50|preemptible|cluster|00:00:00\npreemptible|10||cancel|00:00:30\n"
    assoc = (
        "vision||2|gres/gpu:a100=12|critical,preemptible,standard|standard|root\nvision|alice|1||x||\n"
        "science||1||critical,preemptible,standard|standard|root\n"  # a department that is gone
        "old||1||standard|standard|science\nold|bob|1||x||\n"  # a team that is gone, still under it
        "physics||1||normal||root\n"  # an administrator's own account
    )
    managed = frozenset({"vision", "science", "old"})
    changes = diff(plan, _state(qos, assoc, managed))
    assert [c.sacctmgr for c in changes] == [("delete", "account", "name=old"), ("delete", "account", "name=science")]
    organizations = "root|root\nvision|gpu-grid-portal\nphysics|physics\nscience| gpu-grid-portal\n"
    assert parse_organizations(organizations) == {"vision", "science"}


def test_an_account_the_portal_plans_but_did_not_make_is_adopted_not_removed() -> None:
    plan = compile_plan([TeamInput("vision", ("alice",), (("a100", 12, 2),))], CLASSES, 30)
    qos = "critical|100|preemptible|cluster|00:00:00\nstandard|50|preemptible|cluster|00:00:00\npreemptible|10||cancel|00:00:30\n"
    assoc = "vision||2|gres/gpu:a100=12|critical,preemptible,standard|standard|root\nvision|alice|1||x||\n"
    [adopt] = diff(plan, _state(qos, assoc, frozenset()))
    assert adopt.sacctmgr[-1] == "Organization=gpu-grid-portal"
    new = diff(plan, _state(qos, ""))
    assert ("add", "account", "vision", "Parent=root", "Organization=gpu-grid-portal") in [c.sacctmgr for c in new]


def test_a_class_limited_to_some_teams_is_on_their_accounts_only() -> None:
    classes = [ClassInput("critical", 100, False, frozenset({"render"})), *CLASSES[1:]]
    teams = [*TEAMS, TeamInput("render", ("carol",), (("a100", 8, 1),))]
    accounts = {a.name: a for a in compile_plan(teams, classes, 30).accounts}
    assert accounts["render"].qos == ("critical", "preemptible", "standard")
    assert accounts["vision"].qos == ("preemptible", "standard") and accounts["vision"].default_qos == "standard"
    only_critical = compile_plan(TEAMS, [ClassInput("critical", 100, False, frozenset({"render"}))], 30).accounts[0]
    assert only_critical.qos == ("normal",) and only_critical.default_qos == "normal"  # vision may use none of them


def test_a_department_becomes_the_parent_account_of_its_teams() -> None:
    teams = [
        TeamInput("vision", ("alice",), (("a100", 12, 2),), "science"),
        TeamInput("climate", ("dave",), (("a100", 8, 1),), "science"),
        TeamInput("render", ("carol",), (("a100", 8, 1),)),
    ]
    accounts = compile_plan(teams, CLASSES, 30).accounts
    assert next(a.name for a in accounts) == "science"  # added before the accounts under it
    by_name = {a.name: a for a in accounts}
    science = by_name["science"]
    assert science.parent == "root" and science.fairshare == 3 and science.users == () and science.grp_tres == ()
    assert science.qos == ("critical", "preemptible", "standard") and science.default_qos == "standard"
    assert by_name["vision"].parent == by_name["climate"].parent == "science" and by_name["render"].parent == "root"
    summaries = [c.summary for c in diff(compile_plan(teams, CLASSES, 30), _state("", ""))]
    assert summaries.index("add account science under root") < summaries.index("add account vision under science")
    # A new account is added under its parent; its settings never repeat the parent, since sacctmgr
    # ignores a whole modify whose Parent= is the one the account already has.
    assert not any("Parent=" in s for s in summaries if s.startswith("account "))


def test_a_team_that_changes_department_is_moved_and_only_then() -> None:
    plan = compile_plan([TeamInput("vision", ("alice",), (("a100", 12, 2),), "science")], CLASSES, 30)
    qos = "critical|100|preemptible|cluster|00:00:00\nstandard|50|preemptible|cluster|00:00:00\npreemptible|10||cancel|00:00:30\n"
    placed = (
        "science||2||critical,preemptible,standard|standard|root\n"
        "vision||2|gres/gpu:a100=12|critical,preemptible,standard|standard|science\nvision|alice|1||x||\n"
    )
    assert diff(plan, _state(qos, placed)) == []
    moved = diff(plan, _state(qos, placed.replace("standard|science", "standard|root")))
    assert [c.sacctmgr[-1] for c in moved] == ["Parent=science"]


def test_a_department_named_like_a_team_is_refused() -> None:
    with pytest.raises(ValueError, match="department 'render' has the name of a team"):
        compile_plan([TeamInput("vision", (), (), "render"), TeamInput("render", (), ())], CLASSES, 30)
