"""gridctl login and the config file; the installed console script run as a subprocess."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gridctl import errors
from gridctl.main import main

from jobs.models import Job
from portal.models import User
from tests.cli.conftest import Cli, Result, token_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def gridctl(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


def test_login_checks_the_token_and_stores_it_readable_by_the_owner_only(portal: str, alice: User, isolated_config: Path) -> None:
    key = token_for(alice)
    result = gridctl("login", portal + "/", "--token", key)
    assert result.code == 0, result.err
    assert f"Signed in to {portal} as alice; teams: vision (researcher)" in result.out
    assert stat.S_IMODE(isolated_config.stat().st_mode) == 0o600
    assert stat.S_IMODE(isolated_config.parent.stat().st_mode) == 0o700
    assert yaml.safe_load(isolated_config.read_text()) == {"url": portal, "token": key}
    # Later commands need neither flag nor environment.
    listed = gridctl("list", "-o", "json")
    assert listed.code == 0 and json.loads(listed.out) == []


def test_login_tightens_an_existing_config_and_replaces_its_token(
    portal: str, alice: User, bob: User, isolated_config: Path
) -> None:
    isolated_config.parent.mkdir(parents=True)
    isolated_config.write_text("url: http://old\ntoken: old\n")
    isolated_config.chmod(0o644)
    assert gridctl("login", portal, "--token", token_for(bob)).code == 0
    assert stat.S_IMODE(isolated_config.stat().st_mode) == 0o600
    assert yaml.safe_load(isolated_config.read_text())["url"] == portal


def test_login_with_a_bad_token_stores_nothing(portal: str, isolated_config: Path) -> None:
    result = gridctl("login", portal, "--token", "gp_wrong")
    assert result.code == errors.REFUSED and "401" in result.err
    assert not isolated_config.exists()


def test_login_reads_the_token_from_stdin(
    portal: str, alice: User, isolated_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(token_for(alice) + "\n"))
    assert gridctl("login", portal, "--token-stdin").code == 0
    assert isolated_config.exists()


def test_environment_overrides_the_config_file(
    portal: str, alice: User, carol: User, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    assert gridctl("login", portal, "--token", token_for(carol)).code == 0
    cli("submit", "--set", "name=a", "--set", "command=[x]", "--set", "gpu_model=a100", as_user=alice)
    assert json.loads(gridctl("list", "-o", "json").out) == []  # carol's token from the file
    monkeypatch.setenv("GRID_TOKEN", token_for(alice))
    assert [j["name"] for j in json.loads(gridctl("list", "-o", "json").out)] == ["a"]


def test_without_a_portal_or_token_it_says_how_to_sign_in() -> None:
    result = gridctl("list")
    assert result.code == errors.USAGE
    assert "gridctl login URL" in result.err and "GRID_URL" in result.err


def console_script() -> str:
    found = shutil.which("gridctl", path=os.path.dirname(sys.executable)) or shutil.which("gridctl")
    assert found, "the gridctl console script is not installed (pip install -r requirements-dev.txt installs ./cli)"
    return found


def test_the_installed_console_script_submits_lists_and_reports_exit_codes(portal: str, alice: User, tmp_path: Path) -> None:
    env = {**os.environ, "GRID_URL": portal, "GRID_TOKEN": token_for(alice), "XDG_CONFIG_HOME": str(tmp_path)}
    spec = tmp_path / "job.yaml"
    spec.write_text("name: from-shell\ncommand: [python, train.py]\ngpu_model: a100\ngpus_per_node: 1\n")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([console_script(), *argv], env=env, capture_output=True, text=True, timeout=60)

    submitted = run("submit", str(spec), "-o", "json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    assert Job.objects.get(pk=job_id).name == "from-shell"
    listed = run("list", "-o", "yaml")
    assert [j["id"] for j in yaml.safe_load(listed.stdout)] == [job_id]
    missing = run("status", "999999")
    assert missing.returncode == errors.NOT_FOUND and "404 not found" in missing.stderr
    assert run("frobnicate").returncode == errors.USAGE
    helped = run("--help")
    assert helped.returncode == 0 and "exit codes:" in helped.stdout and "GRID_TOKEN" in helped.stdout
    completion = run("completion", "bash")
    assert completion.returncode == 0
    assert subprocess.run(["bash", "-n"], input=completion.stdout, text=True).returncode == 0
