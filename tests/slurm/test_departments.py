"""On a real Slurm: `sync_slurm` puts a department's teams under its account (Slurm's account tree),
keeps their members' associations, and moves a team that leaves the department back under root."""

from __future__ import annotations

import subprocess
from io import StringIO

import pytest
from django.core.management import call_command

from cluster.backends.slurm import SlurmBackend
from portal.models import Department, Team, User

pytestmark = pytest.mark.slurm


def parent_of(account: str) -> str:
    out = subprocess.run(
        ["sacctmgr", "-n", "-P", "show", "assoc", f"account={account}", "format=account,user,parentname"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line.split("|") for line in out.stdout.splitlines()]
    return next(parent for name, user, parent in rows if name == account and user == "")


def test_a_departments_teams_go_under_its_account_and_back(slurm_world: SlurmBackend, alice: User, vision: Team) -> None:
    science = Department.objects.create(slug="science", name="Science")
    Team.objects.filter(pk=vision.pk).update(department=science)
    call_command("sync_slurm", "--apply", stdout=StringIO())
    try:
        assert parent_of("vision") == "science" and parent_of("science") == "root"
        out = StringIO()
        call_command("sync_slurm", stdout=out)
        assert "account vision" not in out.getvalue() and "account science" not in out.getvalue()  # nothing more to change
        users = subprocess.run(
            ["sacctmgr", "-n", "-P", "show", "assoc", "account=vision", "format=user"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert "alice" in users  # the team's members keep their associations under the moved account
    finally:
        Team.objects.filter(pk=vision.pk).update(department=None)
        call_command("sync_slurm", "--apply", stdout=StringIO())
    assert parent_of("vision") == "root"


def sacctmgr(*args: str) -> str:
    return subprocess.run(["sacctmgr", *args], capture_output=True, text=True, check=False).stdout


@pytest.mark.parametrize("department", [None, "physics"])
def test_a_team_new_to_slurm_gets_its_settings_on_the_first_sync(slurm_world: SlurmBackend, department: str | None) -> None:
    """sacctmgr ignores a whole modify whose Parent= is the account's parent already: a new account is
    added under its parent, and its share, limits and QOS still land in the same sync."""
    parent = Department.objects.create(slug=department, name=department.title()) if department else None
    team = Team.objects.create(slug="newcomers", name="Newcomers", department=parent)
    team.quotas.create(gpu_model="a100", guarantee=4, limit=6)
    accounts = ["newcomers"] + ([department] if department else [])
    for account in accounts:
        sacctmgr("-i", "delete", "account", account)
    try:
        call_command("sync_slurm", "--apply", stdout=StringIO())
        row = sacctmgr("-n", "-P", "show", "assoc", "account=newcomers", "format=user,fairshare,grptres,qos,parentname")
        [settings] = [line.split("|") for line in row.splitlines() if line.startswith("|")]
        assert settings[2] == "gres/gpu:a100=6" and settings[3] == "critical,preemptible,standard", row
        assert parent_of("newcomers") == (department or "root")
        out = StringIO()
        call_command("sync_slurm", stdout=out)
        assert "newcomers" not in out.getvalue()  # the first sync did it all

        # The team (and its department) leave the portal: the accounts the portal made go too;
        # an account an administrator made stays.
        sacctmgr("-i", "add", "account", "admins-own", "Parent=root")
        Team.objects.filter(pk=team.pk).delete()
        if parent is not None:
            parent.delete()
        call_command("sync_slurm", "--apply", stdout=StringIO())
        listed = sacctmgr("-n", "-P", "show", "account", "format=account").split()
        assert "newcomers" not in listed and (department or "newcomers") not in listed
        assert "admins-own" in listed and "vision" in listed
    finally:
        sacctmgr("-i", "delete", "account", "admins-own")
        Team.objects.filter(pk=team.pk).delete()
        for account in accounts:
            sacctmgr("-i", "delete", "account", account)
