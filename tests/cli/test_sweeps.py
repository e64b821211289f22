"""gridctl sweeps against the live portal: start one from a file, list, show with trials, cancel; outsiders refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from gridctl import errors

from portal.models import User
from tests.cli.conftest import Cli
from tests.sweeps.conftest import sweep_request

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_a_sweep_from_a_file_is_listed_shown_and_cancelled(cli: Cli, alice: User, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump(sweep_request(max_trials=4, max_parallel=2)))
    created = cli("sweeps", "--create", str(spec), "-o", "json", as_user=alice)
    assert created.code == errors.OK, created.err
    sweep = json.loads(created.out)
    assert sweep["team"] == "vision" and sweep["max_trials"] == 4 and len(sweep["trials"]) == 2
    listed = json.loads(cli("sweeps", "-o", "json", as_user=alice).out)
    assert [(s["id"], s["name"]) for s in listed] == [(sweep["id"], "lr-search")]
    shown = cli("sweeps", str(sweep["id"]), as_user=alice)
    assert shown.code == errors.OK and f"Sweep {sweep['id']} (lr-search, team vision)" in shown.out
    assert "minimize loss with tpe, 2 of 4 trials" in shown.out and "TRIAL" in shown.out
    cancelled = json.loads(cli("sweeps", str(sweep["id"]), "--cancel", "-o", "json", as_user=alice).out)
    assert cancelled["state"] == "cancelled"


def test_an_outsider_cannot_see_or_cancel_the_sweep(cli: Cli, alice: User, carol: User, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps(sweep_request(max_trials=2, max_parallel=1)))
    sweep = json.loads(cli("sweeps", "--create", str(spec), "-o", "json", as_user=alice).out)
    assert json.loads(cli("sweeps", "-o", "json", as_user=carol).out) == []
    assert cli("sweeps", str(sweep["id"]), as_user=carol).code == errors.NOT_FOUND
    assert cli("sweeps", str(sweep["id"]), "--cancel", as_user=carol).code == errors.NOT_FOUND


def test_a_bad_sweep_names_the_field_and_bad_usage_is_exit_2(cli: Cli, alice: User, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(sweep_request(max_trials=2, max_parallel=5)))
    refused = cli("sweeps", "--create", str(spec), as_user=alice)
    assert refused.code == errors.REFUSED and "max_parallel" in refused.err
    assert cli("sweeps", "--cancel", as_user=alice).code == errors.USAGE
    assert cli("sweeps", "3", "--create", str(spec), as_user=alice).code == errors.USAGE
