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
