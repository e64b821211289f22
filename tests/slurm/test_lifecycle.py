"""Jobs through the portal on a real Slurm: run, fail, time out, cancel; nodes drained and resumed."""

from __future__ import annotations

import re

import pytest

from cluster import services as cluster_services
from cluster.backends.slurm import SlurmBackend
from cluster.models import Node
from cluster.states import NodeState, PoolKind
from jobs import services as job_services
from jobs.models import Job, JobEvent
from jobs.states import JobState
from portal.models import Team, User
from quotas.models import TeamQuota
from tests.slurm.conftest import portal_job, sync_until, wait_for

pytestmark = pytest.mark.slurm


def test_it_runs_a_job_to_completion_on_the_gpus_slurm_assigned(slurm_world: SlurmBackend, alice: User) -> None:
    job = portal_job(
        alice, gpus_per_node=2, command=["bash", "-c", 'echo "gpus=$SLURM_JOB_GPUS cuda=$CUDA_VISIBLE_DEVICES"; sleep 2']
    )
    sync_until(job, {JobState.RUNNING})
    sync_until(job, {JobState.SUCCEEDED})
    assert job.exit_code == 0 and job.started_at and job.finished_at
    log = job_services.read_log(job)
    found = re.search(r"gpus=(\S+) cuda=(\S+)", "\n".join(log))
    assert found, log
    assert len(found.group(1).split(",")) == 2 and found.group(1) == found.group(2)


def test_it_keeps_a_failing_jobs_exit_code(slurm_world: SlurmBackend, alice: User) -> None:
    job = portal_job(alice, command=["bash", "-c", "echo bad input >&2; exit 7"])
    sync_until(job, {JobState.FAILED})
    assert job.exit_code == 7
    assert "NonZeroExitCode" in job.reason_detail


def test_arguments_reach_the_job_unchanged_and_unexpanded(slurm_world: SlurmBackend, alice: User) -> None:
    tricky = 'it\'s $HOME; `id` && rm -rf / "quoted"\nsecond line'
    job = portal_job(alice, command=["printf", "%s", tricky])
    sync_until(job, {JobState.SUCCEEDED})
    assert "\n".join(job_services.read_log(job)) == tricky


def test_slurm_kills_a_job_at_its_time_limit(slurm_world: SlurmBackend, alice: User) -> None:
    job = portal_job(alice, walltime=60, command=["sleep", "600"])
    sync_until(job, {JobState.FAILED}, timeout=150)  # Slurm enforces limits up to ~30 s late
    assert "TimeLimit" in job.reason_detail


def test_cancel_stops_the_slurm_job(slurm_world: SlurmBackend, alice: User) -> None:
    job = portal_job(alice, command=["sleep", "300"])
    sync_until(job, {JobState.RUNNING})
    job_services.cancel(alice, job, "changed my mind")
    assert job_services.cancel_on_backend(job.pk)
    state = wait_for(lambda: slurm_world.job_state(job.backend_job_id)[0].startswith("CANCELLED") and "ok", 15, "CANCELLED")
    assert state
    assert not job_services.cancel_on_backend(job.pk)  # once ended, a repeat does nothing
    slurm_world.cancel("99999999")  # an unknown id is not an error


def test_a_drained_node_keeps_its_job_and_comes_back_on_resume(slurm_world: SlurmBackend, alice: User, olivia: User) -> None:
    job = portal_job(alice, command=["sleep", "4"])
    sync_until(job, {JobState.RUNNING})
    remote = slurm_world.find_job(job.pk)
    assert remote and remote.node_names
    node = remote.node_names[0]
    drained_now = cluster_services.drain(node, olivia.username, "swap a fan")
    assert cluster_services.last_drain_report(drained_now) == {
        "evicted": [],
        "blocked": {},
        "skipped": [],
    }  # Slurm evicts nothing
    cluster_services.sync_nodes(slurm_world)
    drained = Node.objects.get(name=node)
    assert drained.state == NodeState.DRAINING and drained.reason == "swap a fan"
    sync_until(job, {JobState.SUCCEEDED})  # the running job was not touched
    cluster_services.resume(node, olivia.username)
    wait_for(
        lambda: cluster_services.sync_nodes(slurm_world) and Node.objects.get(name=node).state == NodeState.READY, 10, "resume"
    )


def test_node_sync_reports_pools_models_and_gpus_in_use(slurm_world: SlurmBackend, alice: User) -> None:
    job = portal_job(alice, gpus_per_node=3, command=["sleep", "3"])
    sync_until(job, {JobState.RUNNING})
    listed = slurm_world.list_nodes()
    nodes = {n.name: n for n in listed if n.pool_kind == PoolKind.ONPREM}
    assert {n.pool for n in nodes.values()} == {"a100", "h100"}
    assert {n.gpu_model for n in nodes.values()} == {"a100", "h100"}
    assert all(n.gpus == 8 for n in nodes.values())
    assert sum(n.gpus_used for n in nodes.values() if n.pool == "a100") >= 3
    # The power-save slots are a cloud pool, down (nothing may be placed there) while powered off.
    slots = {(n.name, n.pool, n.gpu_model, n.gpus) for n in listed if n.pool_kind == PoolKind.CLOUD}
    assert slots == {("burst-a10g-1", "burst-a10g", "a10g", 4), ("burst-a10g-2", "burst-a10g", "a10g", 4)}


def test_following_the_backend_admits_the_next_job_once_the_first_gives_its_gpus_back(
    slurm_world: SlurmBackend, alice: User, vision: Team
) -> None:
    TeamQuota.objects.filter(team=vision, gpu_model="h100").update(limit=8)  # room for one of the two at a time
    raw = {"name": "wave", "gpu_model": "h100", "gpus_per_node": 8, "walltime": 300, "command": ["sleep", "1"]}
    first, second = (job_services.submit(alice, raw)[0] for _ in range(2))

    def both_done() -> bool:
        return Job.objects.filter(pk__in=(first.pk, second.pk), state=JobState.SUCCEEDED).count() == 2

    cycles = job_services.follow_backend(60, until=both_done)
    assert both_done(), list(Job.objects.filter(pk__in=(first.pk, second.pk)).values_list("state", "reason_detail"))
    first_done = JobEvent.objects.get(job=first, to_state=JobState.SUCCEEDED).at
    second_admitted = JobEvent.objects.get(job=second, to_state=JobState.ADMITTED).at
    assert second_admitted >= first_done  # the portal's quota held: the second waited for the first's GPUs
    assert cycles >= 2
