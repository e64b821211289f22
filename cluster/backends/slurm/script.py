"""The batch script and the slurmrestd job description for a portal job (pure, no I/O).

User text never reaches a shell unescaped: each argument of the job's command is quoted with
`shlex.quote`, environment values travel in the JSON `environment` map (never through the
script), and the script's size is bounded. The job's name is `portal-<id>`, and its comment
`portal:<id>`, so reconciliation finds it by the portal id alone.
"""

from __future__ import annotations

import math
import re
import shlex
from typing import Any

from cluster.backends.base import BackendRejected, JobRequest
from cluster.backends.slurm.config import SlurmConfig
from cluster.gpus import slurm_gres

PREEMPTED_MARK = ":preempted"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
# Every portal job asks for this nice, more than any sum of priority/multifactor weights, so its
# priority is Slurm's floor (1) and Slurm starts the portal's jobs in submission order (equal
# priorities go by job id): the order the portal admitted them in, fair share included.
FIFO_NICE = 2_000_000_000


def job_name(prefix: str, portal_job_id: int) -> str:
    return f"{prefix}-{portal_job_id}"


def portal_id_of(name: str, prefix: str) -> int | None:
    """The portal job id in a Slurm job name, or None for jobs this portal did not submit."""
    head, _, digits = name.rpartition("-")
    return int(digits) if head == prefix and digits.isdigit() else None


def output_path(output_dir: str, backend_job_id: str) -> str:
    return f"{output_dir}/slurm-{backend_job_id}.out"


def build_script(request: JobRequest, max_bytes: int) -> str:
    """A bash batch script that execs the job's command, every argument quoted; or the user's own script."""
    if not request.command and request.script:
        return _user_script(request.script, max_bytes)
    if not request.command:
        raise BackendRejected("command: at least one argument is required")
    for index, arg in enumerate(request.command):
        if "\x00" in arg:
            raise BackendRejected(f"command[{index}]: NUL characters are not allowed")
    argv = " ".join(shlex.quote(arg) for arg in request.command)
    script = (
        "#!/bin/bash\n"
        f"# GPU Grid Portal job {request.portal_job_id}\n"
        # exec: the command itself gets Slurm's signals (grace notice, cancel) and its exit code.
        f"exec {argv}\n"
    )
    size = len(script.encode())
    if size > max_bytes:
        raise BackendRejected(f"command: the batch script would be {size} bytes; the limit is {max_bytes} bytes")
    return script


def _user_script(text: str, max_bytes: int) -> str:
    """A custom job's script is shell the user wrote on purpose: run as given, under bash unless it names its interpreter."""
    if "\x00" in text:
        raise BackendRejected("script: NUL characters are not allowed")
    script = text if text.startswith("#!") else "#!/bin/bash\n" + text
    size = len(script.encode())
    if size > max_bytes:
        raise BackendRejected(f"script: {size} bytes is more than the limit of {max_bytes} bytes")
    return script


def job_environment(request: JobRequest) -> dict[str, str]:
    env = {"PATH": BASE_PATH, "PORTAL_JOB_ID": str(request.portal_job_id)}
    if request.checkpoint_dir:
        env["CHECKPOINT_DIR"] = request.checkpoint_dir
    for name, value in request.env.items():
        if not ENV_NAME.fullmatch(name):
            raise BackendRejected(f"env: {name[:40]!r} is not a valid variable name (letters, digits, _; not first a digit)")
        if "\x00" in value:
            raise BackendRejected(f"env.{name}: NUL characters are not allowed")
        env[name] = value
    return env


def time_limit_minutes(walltime_s: int) -> int:
    """Slurm's time limit is in whole minutes; round up so a job never gets less than it asked."""
    if walltime_s <= 0:
        raise BackendRejected(f"walltime: must be greater than 0 seconds (got {walltime_s})")
    return max(1, math.ceil(walltime_s / 60))


def check_names(request: JobRequest) -> None:
    if not USER_NAME.fullmatch(request.user):
        raise BackendRejected(f"user: {request.user[:40]!r} is not a valid Unix account name")
    if not ACCOUNT_NAME.fullmatch(request.team):
        raise BackendRejected(f"team: {request.team[:40]!r} is not a valid Slurm account name")
    if request.gpus_per_node < 1 or request.nodes < 1:
        raise BackendRejected("gpus_per_node and nodes: each must be at least 1")


def job_submission(request: JobRequest, config: SlurmConfig) -> dict[str, Any]:
    """The body of POST /slurm/v0.0.38/job/submit."""
    check_names(request)
    job: dict[str, Any] = {
        "name": job_name(config.job_prefix, request.portal_job_id),
        "comment": job_name(config.job_prefix, request.portal_job_id),
        "account": request.team,
        "partition": config.partition_for(request.gpu_model),
        "qos": request.priority_class,
        "nodes": [request.nodes, request.nodes],
        "tasks_per_node": 1,
        "gres": f"{slurm_gres(request.gpu_model)}:{request.gpus_per_node}",
        "time_limit": time_limit_minutes(request.walltime_s),
        "current_working_directory": config.output_dir,
        "standard_output": output_path(config.output_dir, "%j"),
        "environment": job_environment(request),
        # A Slurm-side requeue would keep the job id while the portal believes it runs; the
        # portal requeues by submitting again instead, so Slurm must not requeue on its own.
        "requeue": False,
        "nice": FIFO_NICE,
    }
    if required_nodes(request, config.pin_nodes):
        # slurmrestd's v0.0.38 parser refuses `required_nodes` ("Disabled key") and reads no #SBATCH
        # line: the job is submitted held, given its nodes by `scontrol update`, then released.
        job["hold"] = True
    return {"script": build_script(request, config.max_script_bytes), "job": job}


def required_nodes(request: JobRequest, pin: str) -> str:
    """The portal's nodes for Slurm's node list (comma-separated), or "" to let Slurm choose.

    A gang pinned to the nodes the portal reserved lands where the portal's plan (reservations,
    backfill) expects it; a placement that does not name exactly `nodes` nodes is never pinned.
    """
    if pin == "none" or (pin == "gangs" and request.nodes < 2) or len(request.node_names) != request.nodes:
        return ""
    return ",".join(sorted(request.node_names))
