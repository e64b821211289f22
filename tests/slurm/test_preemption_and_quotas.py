"""Preemption with a grace signal and a requeue; quotas compiled to Slurm and enforced by it."""

from __future__ import annotations

import io
import subprocess
from dataclasses import replace

import pytest
from django.core.management import call_command

from cluster.backends.base import JobRequest, RemoteJobState
from cluster.backends.slurm import SlurmBackend
from jobs import services as job_services
from jobs.models import Job
from jobs.states import JobState
from portal.models import Team, User
from quotas.models import TeamQuota
from tests.slurm.conftest import portal_job, sync_until, wait_for

pytestmark = pytest.mark.slurm

# Traps the grace signal, "checkpoints" and exits, as a real training loop would.
CHECKPOINTING = ["bash", "-c", "trap 'echo checkpoint saved; exit 0' TERM; echo started; while true; do sleep 0.2; done"]


def test_a_critical_job_preempts_a_preemptible_one_which_is_requeued(
    slurm_world: SlurmBackend, alice: User, carol: User, render: Team
) -> None:
    TeamQuota.objects.create(team=render, gpu_model="h100", guarantee=8, limit=8)
    call_command("sync_slurm", "--apply", stdout=io.StringIO())
    victims = [
        portal_job(alice, gpu_model="h100", gpus_per_node=8, priority="preemptible", command=CHECKPOINTING) for _ in range(2)
    ]
    for victim in victims:
        sync_until(victim, {JobState.RUNNING})
    # Slurm-side QOS preemption: another team's critical job lands on the full h100 partition.
    critical_request = replace(
        job_services.job_request(victims[0]),
        portal_job_id=10**6 + victims[0].pk,
        priority_class="critical",
        team="render",
        user="carol",
    )
    critical_id = slurm_world.submit(critical_request)
    wait_for(lambda: _requeued(victims), 40, "a preemptible job to be requeued")
    requeued = next(v for v in victims if v.state == JobState.REQUEUED)
    assert "preempted" in requeued.reason_detail
    dispatched = requeued.events.filter(to_state=JobState.DISPATCHED).first()
    assert dispatched is not None
    old_id = dispatched.reason.split()[-1]
    assert "checkpoint saved" in slurm_world.read_log(old_id, 0)
    wait_for(lambda: slurm_world.job_state(critical_id)[0] == "RUNNING", 20, "the critical job to run")


def _requeued(victims: list[Job]) -> bool:
    job_services.sync_jobs()
    for victim in victims:
        victim.refresh_from_db()
    return any(v.state == JobState.REQUEUED for v in victims)


def test_the_portal_preempts_with_a_grace_signal_and_runs_the_job_again(slurm_world: SlurmBackend, alice: User) -> None:
    job = portal_job(alice, priority="preemptible", command=CHECKPOINTING)
    sync_until(job, {JobState.RUNNING})
    first_id = job.backend_job_id
    wait_for(lambda: "started" in slurm_world.read_log(first_id, 0), 10, "the job to start")
    slurm_world.preempt(first_id, grace_s=10)
    assert "checkpoint saved" in slurm_world.read_log(first_id, 0)
    sync_until(job, {JobState.REQUEUED})
    assert slurm_world.find_job(job.pk) is None  # the preempted attempt does not count as a submit
    job_services.run_admission_cycle()
    job_services.dispatch(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.DISPATCHED and job.backend_job_id != first_id
    found = slurm_world.find_job(job.pk)
    assert (
        found and found.backend_job_id == job.backend_job_id and found.state in (RemoteJobState.PENDING, RemoteJobState.RUNNING)
    )
    slurm_world.cancel(job.backend_job_id)


def test_sync_slurm_shows_a_dry_run_then_applies_and_slurm_enforces_the_limit(
    slurm_world: SlurmBackend, alice: User, vision: Team
) -> None:
    TeamQuota.objects.filter(team=vision, gpu_model="a100").update(guarantee=0, limit=2, weight=3)
    out = io.StringIO()
    call_command("sync_slurm", stdout=out)
    assert "would: account vision" in out.getvalue() and "gres/gpu:a100=2" in out.getvalue()
    assert "GrpTRES=gres/gpu:a100=12" in _assoc("vision")  # a dry run changes nothing
    call_command("sync_slurm", "--apply", stdout=io.StringIO())
    assert "gres/gpu:a100=2" in _assoc("vision")
    out = io.StringIO()
    call_command("sync_slurm", stdout=out)
    assert "nothing to change" in out.getvalue()
    # Straight to Slurm, past the portal's own admission: Slurm holds the job over the limit.
    fits = slurm_world.submit(_request(vision_job := portal_job(alice, command=["sleep", "20"]), 900001, 1))
    over = slurm_world.submit(_request(vision_job, 900002, 2))
    wait_for(lambda: slurm_world.job_state(fits)[0] == "RUNNING", 15, "the job within the limit to run")
    reason = wait_for(lambda: _reason(over), 15, "a limit reason on the job over the limit")
    assert "AssocGrpGRES" in reason
    for job_id in (fits, over, vision_job.backend_job_id):
        slurm_world.cancel(job_id)


def _request(job: Job, portal_id: int, gpus: int) -> JobRequest:
    return replace(job_services.job_request(job), portal_job_id=portal_id, gpus_per_node=gpus)


def _assoc(account: str) -> str:
    out = subprocess.run(
        ["sacctmgr", "-n", "-P", "show", "assoc", f"account={account}", "format=account,user,grptres"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return "\n".join(f"GrpTRES={line.split('|')[2]}" for line in out.stdout.splitlines() if line.split("|")[1] == "")


def _reason(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True, check=False)
    return out.stdout.strip() if "Assoc" in out.stdout else ""
