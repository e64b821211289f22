"""The batch script and job description (pure: no Slurm needed)."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

import pytest

from cluster.backends.base import BackendRejected, JobRequest
from cluster.backends.slurm.config import SlurmConfig
from cluster.backends.slurm.script import build_script, job_submission, portal_id_of, required_nodes, time_limit_minutes

CONFIG = SlurmConfig(partitions=(("a100", "gpu-a100"),), output_dir="/shared/out", job_prefix="portal")


def request(**fields: Any) -> JobRequest:
    base = dict(
        portal_job_id=17, name="train", kind="training", team="vision", user="alice", gpu_model="a100",
        gpus_per_node=2, nodes=1, node_names=(), walltime_s=3600, image="", command=("python", "train.py"),
    )  # fmt: skip
    return JobRequest(**{**base, **fields})


def test_it_quotes_every_argument_so_the_shell_sees_them_literally() -> None:
    nasty = ("printf", "%s|", "$(id)", "`id`", "a b", "it's", "; rm -rf /", "line\nbreak", "*")
    script = build_script(request(command=nasty), 65536)
    exec_line = script.split("exec ", 1)[1]
    assert shlex.split(exec_line) == list(nasty)
    out = subprocess.run(["bash", "-c", f"set -- ; {exec_line.replace('exec ', '')}"], capture_output=True, text=True)
    assert out.stdout == "".join(f"{a}|" for a in nasty[2:])


def test_it_bounds_the_script_size_and_names_the_limit() -> None:
    with pytest.raises(BackendRejected, match=r"command: the batch script would be \d+ bytes; the limit is 1024 bytes"):
        build_script(request(command=("echo", "x" * 2000)), 1024)


def test_it_refuses_an_empty_command_and_nul_bytes() -> None:
    with pytest.raises(BackendRejected, match="command: at least one argument"):
        build_script(request(command=()), 65536)
    with pytest.raises(BackendRejected, match=r"command\[1\]: NUL"):
        build_script(request(command=("echo", "a\x00b")), 65536)


def test_a_custom_jobs_own_script_runs_as_written_within_the_size_limit() -> None:
    script = build_script(request(command=(), script="module load cuda\nsrun python train.py\n"), 65536)
    assert script == "#!/bin/bash\nmodule load cuda\nsrun python train.py\n"
    assert build_script(request(command=(), script="#!/usr/bin/env python3\nprint(1)\n"), 65536).startswith(
        "#!/usr/bin/env python3"
    )
    with pytest.raises(BackendRejected, match=r"script: \d+ bytes is more than the limit of 64 bytes"):
        build_script(request(command=(), script="x" * 100), 64)


def test_the_job_description_carries_the_portal_id_account_partition_qos_and_gpus() -> None:
    job = job_submission(request(priority_class="critical", env={"SEED": "1; id"}), CONFIG)["job"]
    assert job["name"] == "portal-17" and job["comment"] == "portal-17"
    assert (job["account"], job["partition"], job["qos"]) == ("vision", "gpu-a100", "critical")
    assert job["gres"] == "gpu:a100:2" and job["nodes"] == [1, 1] and job["time_limit"] == 60
    assert job["standard_output"] == "/shared/out/slurm-%j.out"
    assert job["environment"]["SEED"] == "1; id" and job["environment"]["PORTAL_JOB_ID"] == "17"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"env": {"1BAD": "x"}}, "env: '1BAD' is not a valid variable name"),
        ({"user": "Alice Smith"}, "user: 'Alice Smith' is not a valid Unix account"),
        ({"team": "--all"}, "team: '--all' is not a valid Slurm account"),
        ({"walltime_s": 0}, "walltime: must be greater than 0"),
    ],
)
def test_bad_fields_are_refused_with_the_field_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(BackendRejected, match=message):
        job_submission(request(**fields), CONFIG)


def test_time_limits_round_up_to_whole_minutes() -> None:
    assert [time_limit_minutes(s) for s in (1, 60, 61, 3600)] == [1, 1, 2, 60]


def test_only_this_portals_job_names_carry_a_portal_id() -> None:
    assert portal_id_of("portal-42", "portal") == 42
    assert portal_id_of("t9n1-42", "portal") is None
    assert portal_id_of("portal-4x", "portal") is None
    assert portal_id_of("my-portal-42", "portal") is None


@pytest.mark.parametrize(
    ("pin", "nodes", "names", "required"),
    [
        ("gangs", 2, ("gpu-a100-2", "gpu-a100-1"), "gpu-a100-1,gpu-a100-2"),
        ("gangs", 1, ("gpu-a100-2",), None),  # one node: Slurm chooses within the partition
        ("all", 1, ("gpu-a100-2",), "gpu-a100-2"),
        ("none", 2, ("gpu-a100-1", "gpu-a100-2"), None),
        ("all", 2, ("gpu-a100-1",), None),  # a placement that does not name every node is never pinned
        ("all", 1, (), None),
    ],
)
def test_the_portals_nodes_become_required_nodes_as_configured(
    pin: str, nodes: int, names: tuple[str, ...], required: str | None
) -> None:
    config = SlurmConfig(partitions=(("a100", "gpu-a100"),), pin_nodes=pin)
    pinned = request(nodes=nodes, node_names=names)
    assert (required_nodes(pinned, pin) or None) == required
    assert job_submission(pinned, config)["job"].get("hold", False) is (required is not None)  # held until pinned
