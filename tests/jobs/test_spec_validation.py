"""Job request validation: every refusal names the field and the limit."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.spec import ModelShape, SpecContext, SpecError, TemplateInfo, parse_array, parse_walltime, validate

CTX = SpecContext(
    teams={"vision": 1, "render": 2},
    priorities=frozenset({"standard", "preemptible", "critical"}),
    grid={"a100": ModelShape(8, 32), "h100": ModelShape(8, 16)},
    known_gpu_models=frozenset({"a100", "h100", "a10g"}),
    max_walltime_s=7 * 86400,
    max_script_bytes=1024,
    max_array_size=100,
)
GOOD = {"team": "vision", "name": "train", "command": ["python", "train.py"], "gpu_model": "a100", "gpus_per_node": 2}
DDP = TemplateInfo(
    slug="ddp",
    kind="training",
    image="pytorch:24",
    command=("torchrun", "--nnodes={nodes}", "--nproc-per-node={gpus_per_node}", "{script}"),
    params={"script": "train.py"},
    gpu_model="a100",
    gpus_per_node=8,
    nodes=1,
    walltime_s=3600,
    max_gpus_per_node=8,
    max_nodes=2,
    max_walltime_s=86400,
)


def errors_of(**changes: object) -> dict[str, list[str]]:
    with pytest.raises(SpecError) as caught:
        validate({**GOOD, **changes}, CTX)
    return caught.value.errors


def test_a_good_request_becomes_a_spec() -> None:
    spec = validate(GOOD, CTX)
    assert (spec.team_id, spec.gpus, spec.walltime_s, spec.priority) == (1, 2, 3600, "standard")


def test_an_unknown_gpu_model_is_named_with_the_known_ones() -> None:
    message = errors_of(gpu_model="b200")["gpu_model"][0]
    assert "b200" in message and "a100" in message


def test_more_gpus_per_node_than_a_node_has_names_the_node_size() -> None:
    assert "16 is more than the limit of 8" in errors_of(gpus_per_node=16)["gpus_per_node"][0]


def test_more_gpus_than_the_grid_has_is_refused() -> None:
    assert "more than the grid's 32 a100 GPUs" in errors_of(gpus_per_node=8, nodes=5)["nodes"][0]


def test_multi_node_jobs_must_take_whole_nodes() -> None:
    assert "whole nodes" in errors_of(gpus_per_node=4, nodes=2)["gpus_per_node"][0]


def test_total_gpus_split_into_whole_nodes() -> None:
    raw = {k: v for k, v in GOOD.items() if k != "gpus_per_node"} | {"gpus": 16}
    spec = validate(raw, CTX)
    assert (spec.gpus_per_node, spec.nodes) == (8, 2)


def test_walltime_over_the_limit_names_the_limit() -> None:
    assert "over the limit of 7-00:00:00" in errors_of(walltime="8-00:00:00")["walltime"][0]


def test_a_script_over_the_size_limit_names_the_limit() -> None:
    assert "more than the limit of 1024 bytes" in errors_of(script="x" * 2000)["script"][0]


def test_a_team_the_user_is_not_in_is_refused_by_name() -> None:
    assert "not a member of team 'climate'" in errors_of(team="climate")["team"][0]


def test_a_command_given_as_one_string_is_refused_because_nothing_runs_through_a_shell() -> None:
    assert "not one string" in errors_of(command="python train.py; rm -rf /")["command"][0]


def test_names_that_could_break_a_scheduler_identifier_are_refused() -> None:
    for bad in ["", "a b", "-flag", "x" * 64, "naïve", "$(id)"]:
        assert "name" in errors_of(name=bad), bad


def test_unknown_fields_are_refused_rather_than_ignored() -> None:
    assert "is not a job field" in errors_of(gpus_pre_node=2)["gpus_pre_node"][0]


def test_every_broken_field_is_reported_at_once() -> None:
    errors = errors_of(gpu_model="b200", walltime="bad", priority="vip", env={"bad key": "x"})
    assert {"gpu_model", "walltime", "priority", "env"} <= set(errors)


def test_a_template_fills_its_command_from_params_and_the_jobs_shape() -> None:
    spec = validate({"team": "vision", "name": "ddp", "nodes": 2, "params": {"script": "big.py"}}, _with(DDP))
    assert spec.command == ("torchrun", "--nnodes=2", "--nproc-per-node=8", "big.py")


def test_a_template_limits_what_the_user_may_change() -> None:
    with pytest.raises(SpecError) as caught:
        validate({"team": "vision", "name": "ddp", "nodes": 3, "walltime": "2-00:00:00"}, _with(DDP))
    assert "3 is more than the limit of 2" in caught.value.errors["nodes"][0]
    assert "over the limit of 1-00:00:00" in caught.value.errors["walltime"][0]


def test_a_template_refuses_parameters_it_does_not_have() -> None:
    with pytest.raises(SpecError) as caught:
        validate({"team": "vision", "name": "ddp", "params": {"epochs": "3"}}, _with(DDP))
    assert "'epochs' is not a parameter" in caught.value.errors["params"][0]


def _with(template: TemplateInfo) -> SpecContext:
    return SpecContext(**{**CTX.__dict__, "template": template})


@pytest.mark.parametrize(
    ("text", "seconds"), [(90, 90), ("90", 90), ("01:30:00", 5400), ("2-00:00:01", 172801), ("0:05:00", 300)]
)
def test_walltimes_parse_as_slurm_writes_them(text: int | str, seconds: int) -> None:
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("text", ["1:60:00", "abc", "1.5", True, None])
def test_malformed_walltimes_are_refused(text: str | bool | None) -> None:
    with pytest.raises(ValueError):
        parse_walltime(text)


def test_arrays_parse_counts_ranges_and_steps() -> None:
    assert parse_array(3, 10) == (0, 1, 2)
    assert parse_array("4-10:3", 10) == (4, 7, 10)
    with pytest.raises(ValueError, match="more than the limit of 10"):
        parse_array("0-10", 10)
    with pytest.raises(ValueError):
        parse_array("9-1", 10)


def test_a_script_from_a_browser_is_stored_with_unix_line_ends(grid: Any, alice: Any) -> None:
    from jobs import services as job_services

    job = job_services.submit(
        alice, {"name": "crlf", "script": "#!/bin/bash\r\necho one\r\necho two\r\n", "gpu_model": "a100", "walltime": 600}
    )[0]
    assert job.script == "#!/bin/bash\necho one\necho two\n"
