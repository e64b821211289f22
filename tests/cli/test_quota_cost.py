"""gridctl quota, cost and templates against the live portal."""

from __future__ import annotations

import json

import pytest
import yaml
from gridctl import errors

from portal.models import User
from tests.cli.conftest import Cli, run_cycle

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_quota_shows_guarantee_limit_and_the_gpus_held(cli: Cli, alice: User) -> None:
    submitted = cli(
        "submit", "--set", "name=a", "--set", "command=[x]", "--set", "gpu_model=a100", "--set", "gpus_per_node=4", as_user=alice
    )  # fmt: skip
    assert submitted.code == 0, submitted.err
    run_cycle()
    rows = json.loads(cli("quota", "-o", "json", as_user=alice).out)
    assert [(r["team"], r["gpu_model"], r["guarantee"], r["limit"], r["in_use"]) for r in rows] == [("vision", "a100", 4, 12, 4)]
    table = cli("quota", as_user=alice).out.splitlines()
    assert table[0].split()[:4] == ["TEAM", "GPU", "MODEL", "IN"] and table[1].split()[:5] == ["vision", "a100", "4", "4", "12"]


def test_cost_is_refused_to_a_researcher_and_shown_to_the_lead(cli: Cli, alice: User, bob: User) -> None:
    refused = cli("cost", as_user=alice)
    assert refused.code == errors.REFUSED and "403 forbidden" in refused.err and "finance and team leads" in refused.err
    report = yaml.safe_load(cli("cost", "--month", "2026-01", "-o", "yaml", as_user=bob).out)
    assert report["month"] == "2026-01" and "total" in report
    assert cli("cost", "--month", "2026-01", as_user=bob).out.startswith("2026-01: ")
    bad = cli("cost", "--month", "January", as_user=bob)
    assert bad.code == errors.REFUSED and "month" in bad.err


def test_templates_lists_slugs_and_placeholders(cli: Cli, alice: User) -> None:
    rows = json.loads(cli("templates", "-o", "json", as_user=alice).out)
    assert {"pytorch-ddp", "blender-render", "gromacs-md", "custom"} <= {t["slug"] for t in rows}
    assert "scene=scene.blend" in cli("templates", as_user=alice).out
