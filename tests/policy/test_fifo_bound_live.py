"""The portal's admission gives the fair policy each job's FIFO start, from the same shadow as the replay."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobs import admission
from jobs.models import Job
from portal.models import User


@pytest.mark.django_db
def test_each_waiting_job_gets_its_start_under_strict_fifo(alice: User, submit: Callable[..., Job]) -> None:
    # Two a100 nodes of 8 GPUs; the vision team's limit is 12. Three 4-GPU jobs fit at once under
    # FIFO; the fourth waits for the first to end (walltime 600 s), and the 1-GPU job behind it, over
    # the limit beside those three, for the second.
    jobs = [submit(alice, name=f"j{i}", gpus_per_node=4) for i in range(4)]
    small = submit(alice, name="small", gpus_per_node=1)
    waiting, holding = admission.snapshot_jobs()
    grid = admission.cluster({})
    quotas = admission.quotas({(j.team.slug, j.gpu_model) for j in [*waiting, *holding]})
    starts = admission.fifo_starts([*waiting, *holding], grid, quotas)
    submitted = [j.submitted_at.timestamp() for j in jobs]
    assert [starts[j.pk] for j in jobs[:3]] == submitted[:3]
    assert starts[jobs[3].pk] == pytest.approx(submitted[0] + 600)
    assert starts[small.pk] == pytest.approx(submitted[1] + 600)
    pending = admission.pending_jobs(waiting, admission.classes(), fifo_starts=starts)
    assert {p.id: p.fifo_start for p in pending} == {j.pk: starts[j.pk] for j in waiting}
