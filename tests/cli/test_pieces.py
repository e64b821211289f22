"""gridctl's pure parts: --set, Retry-After, error messages, completion, wait's exit codes."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from gridctl import errors
from gridctl.client import retry_after
from gridctl.errors import field_messages
from gridctl.main import main, wait_exit_code
from gridctl.spec import apply_sets


def test_set_reads_numbers_and_lists_keeps_text_and_routes_placeholders() -> None:
    body = apply_sets(
        {"name": "x", "env": {"A": "1"}},
        ["gpus_per_node=2", "command=[python, t.py]", "name=007", "env.B=true", "scene=s.blend", "params.frames=1-10"],
        {"scene"},
    )
    assert body == {
        "name": "007", "env": {"A": "1", "B": "true"}, "gpus_per_node": 2, "command": ["python", "t.py"],
        "params": {"scene": "s.blend", "frames": "1-10"},
    }  # fmt: skip


@pytest.mark.parametrize("bad", ["novalue", "=3"])
def test_set_without_key_and_value_is_a_usage_error(bad: str) -> None:
    with pytest.raises(errors.UsageError):
        apply_sets({}, [bad], set())


def test_retry_after_takes_seconds_or_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after("7") == 7.0
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_field_messages_name_each_field() -> None:
    body = {"gpus_per_node": ["16 is more than the limit of 8"], "params": {"scene": ["required"]}, "non_field_errors": ["x"]}
    assert field_messages(body) == ["gpus_per_node: 16 is more than the limit of 8", "params.scene: required", "x"]
    assert field_messages({"detail": "Not found."}) == ["Not found."]


@pytest.mark.parametrize(
    ("job", "code"),
    [
        ({"state": "succeeded", "exit_code": 0}, 0),
        ({"state": "failed", "exit_code": 3}, 3),
        ({"state": "failed", "exit_code": None}, errors.JOB_FAILED),
        ({"state": "failed", "exit_code": 0, "reason_detail": "TimeLimit"}, errors.JOB_TIMED_OUT),
        ({"state": "cancelled", "exit_code": None}, errors.JOB_CANCELLED),
    ],
)
def test_wait_exit_codes(job: dict[str, object], code: int) -> None:
    assert wait_exit_code(job) == code


def test_help_documents_every_exit_code() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["--help"], out=out, err=err) == 0
    for code, _ in errors.EXIT_CODES:
        assert f"  {code:>3}  " in out.getvalue()
    assert "GRID_TOKEN" in out.getvalue() and "completion" in out.getvalue()
    assert main(["wait", "--help"], out=(sub := io.StringIO())) == 0 and "exit codes:" in sub.getvalue()
    assert main(["list", "--output", "xml"], out=io.StringIO(), err=err) == errors.USAGE
    assert "invalid choice: 'xml'" in err.getvalue()
    assert main([], out=io.StringIO()) == errors.USAGE


def test_zsh_completion_parses() -> None:
    if shutil.which("zsh") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("zsh is not installed; scripts/ensure-services installs it (apt-get install zsh)")
        pytest.skip("zsh is not installed (apt-get install zsh)")
    out = io.StringIO()
    assert main(["completion", "zsh"], out=out) == 0
    assert subprocess.run(["zsh", "-n"], input=out.getvalue(), text=True).returncode == 0


def test_completion_names_every_command_and_option() -> None:
    out = io.StringIO()
    assert main(["completion", "bash"], out=out) == 0
    script = out.getvalue()
    for command in ("login", "submit", "status", "list", "logs", "cancel", "wait", "quota", "cost", "completion"):
        assert f"    {command}) " in script
    assert "--output" in script and "--template" in script and "complete -F _gridctl gridctl" in script
