"""gridctl's job commands against the live portal: submit, list, status, cancel, wait, logs, field-named errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from gridctl import errors

from cluster.models import SimJob
from jobs.models import Job
from jobs.states import JobState
from portal.models import User
from tests.cli.conftest import Cli, run_cycle

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SPEC = {"name": "resnet", "command": ["python", "train.py"], "gpu_model": "a100", "gpus_per_node": 1, "walltime": "00:10:00"}


def submitted_id(cli: Cli, alice: User, *argv: str) -> int:
    result = cli("submit", "--set", "command=[python, train.py]", "--set", "gpu_model=a100", *argv, "-o", "json", as_user=alice)
    assert result.code == 0, result.err
    return int(json.loads(result.out)["id"])


def test_submit_from_a_yaml_spec_creates_the_job(cli: Cli, alice: User, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "env": {"SEED": "1"}}))
    result = cli("submit", str(spec), as_user=alice)
    assert result.code == 0, result.err
    job = Job.objects.get()
    assert result.out == f"Submitted job {job.pk} (resnet): pending\n"
    assert (job.name, job.team.slug, job.owner.username, job.gpus, job.walltime_s, job.env) == (
        "resnet", "vision", "alice", 1, 600, {"SEED": "1"}
    )  # fmt: skip


def test_submit_from_a_json_spec_on_stdin_with_set_overrides(
    cli: Cli, alice: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(SPEC)))
    job_id = submitted_id(cli, alice, "-", "--set", "gpus_per_node=2", "--set", "name=resnet-2", "--set", "env.SEED=007")
    job = Job.objects.get(pk=job_id)
    assert (job.name, job.gpus_per_node, job.env) == ("resnet-2", 2, {"SEED": "007"})


def test_submit_from_a_template_sets_placeholders_and_makes_an_array(cli: Cli, alice: User) -> None:
    result = cli(
        "submit", "--template", "blender-render", "--name", "shot", "--set", "scene=s.blend", "--set", "frame_end=10",
        "--array", "0-3", "-o", "yaml", as_user=alice,
    )  # fmt: skip
    assert result.code == 0, result.err
    created = yaml.safe_load(result.out)
    assert created["count"] == 4 and len(created["ids"]) == 4
    jobs = list(Job.objects.filter(pk__in=created["ids"]).order_by("array_index"))
    assert [j.array_index for j in jobs] == [0, 1, 2, 3]
    assert all(j.template is not None and j.template.slug == "blender-render" for j in jobs)
    assert "s.blend" in jobs[0].command and "10" in jobs[0].command


def test_a_bad_field_gives_the_apis_field_named_error_and_exit_3(cli: Cli, alice: User, tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(SPEC))
    result = cli("submit", str(spec), "--set", "gpus_per_node=16", as_user=alice)
    assert result.code == errors.REFUSED == 3
    assert "POST /api/v1/jobs/: 400 refused" in result.err
    assert "\n  gpus_per_node: 16 is more than" in result.err
    assert result.out == ""
    assert not Job.objects.exists()


def test_an_unreadable_spec_is_a_usage_error(cli: Cli, alice: User, tmp_path: Path) -> None:
    result = cli("submit", str(tmp_path / "missing.yaml"), as_user=alice)
    assert result.code == errors.USAGE
    assert "cannot read the job spec" in result.err
    assert cli("status", "not-a-number", as_user=alice).code == errors.USAGE


def test_list_shows_why_pending_position_and_estimate_in_each_format(cli: Cli, alice: User) -> None:
    first = submitted_id(
        cli, alice, "--set", "name=a", "--set", "gpu_model=a100", "--set", "gpus_per_node=8", "--set", "walltime=3600"
    )
    second = submitted_id(
        cli, alice, "--set", "name=b", "--set", "gpu_model=a100", "--set", "gpus_per_node=8", "--set", "walltime=3600"
    )
    third = submitted_id(
        cli, alice, "--set", "name=c", "--set", "gpu_model=a100", "--set", "gpus_per_node=8", "--set", "walltime=3600"
    )
    run_cycle()  # vision's A100 limit is 12: the first runs, the other two wait for the quota
    waiting = Job.objects.get(pk=third)
    assert waiting.state == JobState.PENDING and waiting.reason

    as_json = json.loads(cli("list", "-o", "json", as_user=alice).out)
    assert [j["id"] for j in as_json] == [third, second, first]
    assert {k: as_json[0][k] for k in ("state", "reason", "team_position", "pool_position")} == {
        "state": "pending", "reason": waiting.reason, "team_position": waiting.team_position,
        "pool_position": waiting.pool_position,
    }  # fmt: skip
    assert yaml.safe_load(cli("list", "-o", "yaml", as_user=alice).out) == as_json

    table = cli("list", "--state", "pending", as_user=alice).out.splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "TEAM", "STATE"] and "WHY PENDING" in table[0]
    assert len(table) == 3 and table[1].split()[:4] == [str(third), "c", "vision", "pending"]
    assert "team GPU limit reached" in table[1] and waiting.reason_detail in table[1]
    assert f"#{waiting.team_position} in team" in table[1]


def test_status_in_each_format(cli: Cli, alice: User) -> None:
    job_id = submitted_id(cli, alice, "--set", "name=one", "--set", "gpus_per_node=1")
    table = cli("status", str(job_id), as_user=alice)
    assert table.code == 0
    lines = dict(line.split(":", 1) for line in table.out.splitlines())
    assert lines["id"].strip() == str(job_id) and lines["state"].strip() == Job.objects.get(pk=job_id).state
    assert {"why pending", "position", "estimated start"} <= set(lines)
    data = json.loads(cli("status", str(job_id), "--events", "-o", "json", as_user=alice).out)
    assert data["id"] == job_id and data["events"][0]["to_state"] == "pending"
    assert yaml.safe_load(cli("status", str(job_id), "-o", "yaml", as_user=alice).out)["name"] == "one"


def test_cancel_cancels_and_a_second_cancel_is_refused(cli: Cli, alice: User) -> None:
    job_id = submitted_id(cli, alice, "--set", "name=one", "--set", "gpus_per_node=1")
    result = cli("cancel", str(job_id), "--reason", "wrong data", as_user=alice)
    assert result.code == 0, result.err
    assert result.out == f"Job {job_id} (one): cancelled\n"
    assert Job.objects.get(pk=job_id).state == JobState.CANCELLED
    again = cli("cancel", str(job_id), as_user=alice)
    assert again.code == errors.REFUSED and "state:" in again.err


def test_an_outsiders_token_is_refused_for_another_teams_job(cli: Cli, alice: User, carol: User) -> None:
    job_id = submitted_id(cli, alice, "--set", "name=one", "--set", "gpus_per_node=1")
    for argv in (["status", str(job_id)], ["cancel", str(job_id)], ["logs", str(job_id)], ["wait", str(job_id)]):
        result = cli(*argv, as_user=carol)
        assert result.code == errors.NOT_FOUND == 4, argv
        assert "404 not found" in result.err
    assert Job.objects.get(pk=job_id).state != JobState.CANCELLED
    assert cli("list", "-o", "json", as_user=carol).out.strip() == "[]"


def test_a_revoked_or_wrong_token_is_refused_with_exit_3(cli: Cli, portal: str) -> None:
    result = cli("--url", portal, "--token", "gp_not-a-token", "list")
    assert result.code == errors.REFUSED
    assert "401" in result.err and "gridctl login" in result.err


def test_wait_exits_0_when_the_job_succeeds(cli: Cli, alice: User, advance: list[float]) -> None:
    job_id = submitted_id(cli, alice, "--set", "name=one", "--set", "gpus_per_node=1")
    result = cli("wait", str(job_id), "--interval", "3", as_user=alice)
    assert result.code == 0, result.err
    assert result.out == f"Job {job_id} (one): succeeded, exit code 0\n"
    assert advance and set(advance) == {3.0}


@pytest.mark.parametrize(
    ("outcome", "exit_code", "reason", "expected"),
    [
        ("failed", 137, "OutOfMemory", 137),
        ("failed", 0, "TimeLimit", errors.JOB_TIMED_OUT),
        ("failed", 0, "Crash", errors.JOB_FAILED),
    ],
)
def test_wait_passes_on_how_a_job_failed(
    cli: Cli, alice: User, advance: list[float], outcome: str, exit_code: int, reason: str, expected: int
) -> None:
    job_id = submitted_id(cli, alice, "--set", "name=one", "--set", "gpus_per_node=1")
    run_cycle()
    SimJob.objects.filter(portal_job_id=job_id).update(outcome_state=outcome, outcome_exit_code=exit_code, outcome_reason=reason)
    result = cli("wait", str(job_id), "-o", "json", as_user=alice)
    assert result.code == expected
    assert json.loads(result.out)["state"] == "failed"


def test_wait_exits_7_for_a_cancelled_job_and_6_when_its_timeout_passes(cli: Cli, alice: User) -> None:
    job_id = submitted_id(cli, alice, "--set", "name=one", "--set", "gpus_per_node=1")
    result = cli("wait", str(job_id), "--timeout", "0.01", "--interval", "0.01", as_user=alice)
    assert result.code == errors.WAIT_TIMEOUT
    assert f"job {job_id} is still {Job.objects.get(pk=job_id).state} after 0.01 s" in result.err
    assert cli("cancel", str(job_id), as_user=alice).code == 0
    assert cli("wait", str(job_id), as_user=alice).code == errors.JOB_CANCELLED


def test_logs_follow_falls_back_to_polling_and_prints_every_line_once(cli: Cli, alice: User, advance: list[float]) -> None:
    job_id = submitted_id(cli, alice, "--set", "name=one", "--set", "gpus_per_node=1")
    result = cli("logs", "-f", str(job_id), "--interval", "1", as_user=alice)
    assert result.code == 0, result.err
    # The test server speaks plain HTTP only: gridctl says so and polls.
    assert "live log websocket unavailable" in result.err and "polling the API every 1 s" in result.err
    lines = result.out.splitlines()
    assert lines and "finished: exit code 0" in lines[-1]
    assert len(lines) == len(set(lines))
    assert cli("logs", str(job_id), as_user=alice).out == result.out


def test_list_follows_the_cursor_pages_up_to_the_limit(cli: Cli, alice: User) -> None:
    created = cli(
        "submit",
        "--set",
        "command=[x]",
        "--set",
        "gpu_model=a100",
        "--name",
        "many",
        "--array",
        "60",
        "-o",
        "json",
        as_user=alice,
    )
    assert created.code == 0, created.err
    ids = json.loads(created.out)["ids"]
    everything = json.loads(cli("list", "--limit", "0", "-o", "json", as_user=alice).out)
    assert sorted(j["id"] for j in everything) == sorted(ids)  # more than one page of 50
    assert len(json.loads(cli("list", "--limit", "55", "-o", "json", as_user=alice).out)) == 55
    assert len(json.loads(cli("list", "-o", "json", as_user=alice).out)) == 50
