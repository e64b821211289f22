"""The Slurm backend: jobs through slurmrestd as their owner, nodes and signals as the portal.

Placement: slurmrestd 22.05 cannot take a node list at submit, so the portal's chosen nodes are
not passed on; Slurm places the job within the partition of the GPU pool, and the next node and
job sync brings Slurm's choice (nodes, GPUs in use) back into the portal.

Preemption and requeue: the portal marks the Slurm job (`comment` gets `:preempted`), sends
SIGTERM to the job so it can checkpoint, waits up to the grace period, then cancels it. Any end
of a marked job, and Slurm's own PREEMPTED state (QOS preemption after its GraceTime), reads as
`preempted`, so the portal puts the job back in its queue and later submits a new Slurm job for
it; `find_job` ignores such a finished attempt so that the new submit is not mistaken for a
duplicate.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cluster.backends.base import (
    BackendRejected,
    BackendUnavailable,
    ClusterBackend,
    DrainReport,
    JobRequest,
    RemoteJob,
    RemoteJobState,
    RemoteNode,
)
from cluster.backends.slurm.cli import SlurmCommands
from cluster.backends.slurm.config import SlurmConfig
from cluster.backends.slurm.mapping import (
    CORDON_PREFIX,
    SQUEUE_FORMAT,
    TERMINAL_SLURM,
    PowerSlot,
    accounted_job,
    power_slot,
    remote_job,
    remote_node,
    squeue_record,
)
from cluster.backends.slurm.rest import API, DBAPI, Breaker, RestClient
from cluster.backends.slurm.script import PREEMPTED_MARK, job_name, job_submission, output_path, required_nodes
from cluster.backends.slurm.tokens import TokenIssuer

NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
JOB_ID = re.compile(r"^[0-9]{1,12}$")
GONE_ERRORS = ("invalid job id", "already completed", "job/step already completing or completed")
NOTHING_FOUND = "Nothing found"
NAMES_PER_QUERY = 50  # keeps the slurmdbd query string short
ACTIVE = (RemoteJobState.PENDING, RemoteJobState.RUNNING)
EPOCH_TIMES = {"SLURM_TIME_FORMAT": "%s"}  # squeue prints times as epoch seconds
CLOCK_SKEW_S = 30  # between the portal's clock and slurmctld's


log = logging.getLogger(__name__)


class SlurmBackend(ClusterBackend):
    """A real Slurm cluster behind slurmrestd (jobs, nodes) and scontrol/scancel (drain, signals)."""

    name = "slurm"

    def __init__(self, config: SlurmConfig | None = None) -> None:
        self.config = config or SlurmConfig.from_settings()
        self.tokens = TokenIssuer(self.config.jwt_key_file, self.config.token_lifespan_s, f"{self.config.bin_dir}/scontrol")
        self.breaker = Breaker(self.config.backoff_max_s)
        self.rest = RestClient(self.config.rest_url, self.tokens, self.config.timeout_s, self.breaker)
        self.commands = SlurmCommands(self.config.bin_dir, self.tokens, self.config.service_user, self.config.timeout_s)

    def _as_portal(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        return self.rest.call(method, path, user=self.config.service_user, what=what, **kwargs)

    # --- jobs ---------------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> str:
        body = job_submission(request, self.config)
        answer = self.rest.call(
            "POST", f"{API}/job/submit", user=request.user, body=body, what=f"submit portal job {request.portal_job_id}"
        )
        job_id = answer.get("job_id")
        if not isinstance(job_id, int):
            raise BackendUnavailable(f"slurmrestd answered a submit without a job id: {str(answer)[:200]}")
        pinned = required_nodes(request, self.config.pin_nodes)
        if pinned:
            self._pin(job_id, pinned, request.portal_job_id)
        return str(job_id)

    def _pin(self, job_id: int, nodes: str, portal_job_id: int) -> None:
        """Give the held job the portal's nodes and release it; on failure cancel it, so nothing is left half-submitted."""
        try:
            self.commands.run(
                "scontrol", "update", f"JobId={job_id}", f"ReqNodeList={nodes}", what=f"pin portal job {portal_job_id}"
            )
            self.commands.run("scontrol", "release", str(job_id), what=f"release portal job {portal_job_id}")
        except (BackendRejected, BackendUnavailable):
            try:
                self.commands.run("scancel", str(job_id), what=f"cancel portal job {portal_job_id} after a failed pin")
            except (BackendRejected, BackendUnavailable):
                log.warning("portal job %s: Slurm job %s could not be cancelled after a failed pin", portal_job_id, job_id)
            raise

    def _live_jobs(self) -> list[RemoteJob]:
        """Every portal job slurmctld still holds (active ones and those ended within MinJobAge).

        One `squeue` run: slurmctld's binary answer cut to the fields the portal reads takes a few
        milliseconds where slurmrestd's JSON of every job takes tens, and the sync runs this often.
        """
        self.breaker.check()
        try:
            out = self.commands.run(
                "squeue", "--noheader", "--states=all", f"--Format={SQUEUE_FORMAT}", what="list jobs", env=EPOCH_TIMES
            )
        except BackendUnavailable as exc:
            self.breaker.failed(str(exc))
            raise
        self.breaker.succeeded()
        prefix = self.config.job_prefix
        records = (squeue_record(line, prefix) for line in out.splitlines())
        return [job for job in (remote_job(r, prefix) for r in records if r is not None) if job is not None]

    def _accounted_jobs(self, portal_job_ids: Iterable[int]) -> list[RemoteJob]:
        """The same from slurmdbd, for jobs slurmctld has already forgotten."""
        found: list[RemoteJob] = []
        ids = sorted(set(portal_job_ids))
        for chunk in (ids[i : i + NAMES_PER_QUERY] for i in range(0, len(ids), NAMES_PER_QUERY)):
            names = ",".join(job_name(self.config.job_prefix, pid) for pid in chunk)
            try:
                answer = self._as_portal("GET", f"{DBAPI}/jobs", "read job accounting", query={"job_name": names})
            except BackendRejected as exc:
                if NOTHING_FOUND not in str(exc):
                    raise
                continue  # slurmdbd calls an empty answer an error
            jobs = (accounted_job(j, self.config.job_prefix) for j in answer.get("jobs") or [])
            found.extend(job for job in jobs if job is not None)
        return found

    def list_jobs(self, portal_job_ids: list[int] | None = None) -> list[RemoteJob]:
        """The latest Slurm job per portal id (a preempted job's next attempt has a higher id)."""
        live = self._live_jobs()
        if portal_job_ids is not None:
            wanted = set(portal_job_ids)
            live = [job for job in live if job.portal_job_id in wanted]
            missing = wanted - {job.portal_job_id for job in live}
            live.extend(self._accounted_jobs(missing) if missing else [])
        return _latest(live)

    def list_jobs_since(self, since: Mapping[int, datetime]) -> list[RemoteJob]:
        """As `list_jobs`, asking slurmdbd only about ids that may have a job slurmctld has forgotten.

        slurmctld keeps a job for MinJobAge after it ends, so a job first submitted less than that
        ago (less a margin for clock skew) is in slurmctld's listing if it exists at all.
        """
        live = [job for job in self._live_jobs() if job.portal_job_id in since]
        found = {job.portal_job_id for job in live}
        archived_before = datetime.now(UTC) - timedelta(seconds=max(0, self.config.min_job_age_s - CLOCK_SKEW_S))
        missing = [pid for pid, at in since.items() if pid not in found and at < archived_before]
        live.extend(self._accounted_jobs(missing) if missing else [])
        return _latest(live)

    def find_job(self, portal_job_id: int) -> RemoteJob | None:
        found = self.list_jobs([portal_job_id])
        if not found or found[0].state == RemoteJobState.PREEMPTED:
            return None  # a preempted attempt is history; the portal submits the job again
        return found[0]

    def backlog_gpus(self) -> int:
        """`SLURM_BACKLOG`: portal jobs get Slurm's floor priority (see script.FIFO_NICE), so Slurm
        starts queued ones in submission order, the portal's order, the moment GPUs free up."""
        return self.config.backlog_gpus

    def job_state(self, backend_job_id: str) -> tuple[str, str]:
        """Slurm's own state word and comment for one job id ("" if slurmctld does not know it)."""
        _check_job_id(backend_job_id)
        try:
            answer = self._as_portal("GET", f"{API}/job/{backend_job_id}", f"read job {backend_job_id}")
        except BackendRejected:
            return "", ""
        jobs = answer.get("jobs") or [{}]
        return str(jobs[0].get("job_state") or ""), str(jobs[0].get("comment") or "")

    def cancel(self, backend_job_id: str) -> None:
        """Cancel, then look: Slurm says nothing when the id is unknown or the job already ended."""
        _check_job_id(backend_job_id)
        try:
            self._as_portal("DELETE", f"{API}/job/{backend_job_id}", f"cancel job {backend_job_id}")
        except BackendRejected as exc:
            if not any(word in str(exc).lower() for word in GONE_ERRORS):
                raise
        state, _ = self.job_state(backend_job_id)
        if state in ("PENDING", "RUNNING"):
            raise BackendUnavailable(f"job {backend_job_id} is still {state} after the cancel; try again")

    def preempt(self, backend_job_id: str, grace_s: float) -> None:
        """Give the job SIGTERM and `grace_s` seconds to checkpoint, then stop it; the portal requeues it."""
        _check_job_id(backend_job_id)
        state, comment = self.job_state(backend_job_id)
        if state not in ("PENDING", "RUNNING"):
            return
        marked = (comment or "portal").removesuffix(PREEMPTED_MARK) + PREEMPTED_MARK
        self.commands.run("scontrol", "update", f"JobId={backend_job_id}", f"Comment={marked}", what="mark the job preempted")
        if state == "RUNNING" and grace_s > 0:
            self.signal(backend_job_id, "TERM")
            self._wait_for_end(backend_job_id, grace_s)
        self.cancel(backend_job_id)

    def requeue(self, backend_job_id: str) -> None:
        """Stop the job now and hand it back to the portal's queue (a preemption without grace)."""
        self.preempt(backend_job_id, 0)

    def signal(self, backend_job_id: str, signal: str) -> None:
        """Send a signal to the batch script and every step (the job itself decides what it means)."""
        _check_job_id(backend_job_id)
        if not re.fullmatch(r"[A-Z0-9]{2,8}", signal):
            raise BackendRejected(f"signal: {signal[:20]!r} is not a signal name like TERM or USR1")
        self.commands.run("scancel", f"--signal={signal}", "--full", backend_job_id, what=f"signal job {backend_job_id}")

    def _wait_for_end(self, backend_job_id: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state, _ = self.job_state(backend_job_id)
            if not state or state in TERMINAL_SLURM:
                return
            time.sleep(0.5)

    def read_log(self, backend_job_id: str, offset: int, limit: int = 500) -> list[str]:
        """Lines of the job's output file (shared file system between the portal and the nodes)."""
        _check_job_id(backend_job_id)
        try:
            with open(output_path(self.config.output_dir, backend_job_id), encoding="utf-8", errors="replace") as handle:
                return [line.rstrip("\n") for line in itertools.islice(handle, max(0, offset), max(0, offset) + limit)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackendUnavailable(f"cannot read the output of job {backend_job_id}: {exc}") from exc

    # --- nodes --------------------------------------------------------------------------------

    def list_nodes(self) -> list[RemoteNode]:
        answer = self._as_portal("GET", f"{API}/nodes", "list nodes")
        return [remote_node(node, self.config.cloud_partitions) for node in answer.get("nodes") or []]

    def _update_node(self, node: str, *settings: str) -> None:
        if not NODE_NAME.fullmatch(node):
            raise BackendRejected(f"node: {node[:70]!r} is not a valid node name")
        self.commands.run("scontrol", "update", f"NodeName={node}", *settings, what=f"update node {node}")

    def cordon(self, node: str, reason: str) -> None:
        self._update_node(node, "State=DRAIN", f"Reason={CORDON_PREFIX}{_reason(reason)}")

    def drain(self, node: str, reason: str) -> DrainReport:
        """State=DRAIN: Slurm places nothing new and lets running jobs end; it evicts nothing, so
        nothing can be blocked and the report is empty (the node shows `draining` until it is idle)."""
        self._update_node(node, "State=DRAIN", f"Reason={_reason(reason)}")
        return DrainReport(node)

    def resume(self, node: str) -> None:
        self._update_node(node, "State=RESUME")

    def scale_pool(self, pool: str, nodes: int) -> None:
        raise BackendRejected(
            f"pool {pool!r}: Slurm's elastic pools are power-save slots, resumed one by one (power_up, bursting/slurm_power.py)"
        )

    # --- power-save (State=CLOUD) nodes: bursting/slurm_power.py ------------------------------

    def power_slots(self) -> list[PowerSlot]:
        """Every power-save node of slurm.conf and where it is in its power cycle."""
        answer = self._as_portal("GET", f"{API}/nodes", "list nodes")
        return [slot for slot in (power_slot(node) for node in answer.get("nodes") or []) if slot is not None]

    def power_up(self, node: str) -> None:
        """Slurm runs ResumeProgram for the node; it is up once the instance's slurmd registers."""
        self._update_node(node, "State=POWER_UP")

    def power_down(self, node: str) -> None:
        """Slurm runs SuspendProgram for the node. FORCE: the portal has drained it and seen it idle, and
        only FORCE also clears the drain, so the slot comes back plain idle for the next burst."""
        self._update_node(node, "State=POWER_DOWN_FORCE")

    def health(self) -> dict[str, object]:
        answer = self._as_portal("GET", f"{API}/ping", "answer a ping")
        pings = answer.get("pings") or [{}]
        return {"ok": True, "backend": self.name, "controller": pings[0].get("ping", "?"), "degraded": False}


def _latest(jobs: Iterable[RemoteJob]) -> list[RemoteJob]:
    latest: dict[int, RemoteJob] = {}
    for job in jobs:
        kept = latest.get(job.portal_job_id)
        if kept is None or int(job.backend_job_id) > int(kept.backend_job_id):
            latest[job.portal_job_id] = job
    return sorted(latest.values(), key=lambda job: job.portal_job_id)


def _check_job_id(backend_job_id: str) -> None:
    if not JOB_ID.fullmatch(backend_job_id):
        raise BackendRejected(f"backend_job_id: {backend_job_id[:20]!r} is not a Slurm job id")


def _reason(reason: str) -> str:
    text = " ".join(reason.split())
    if not text:
        raise BackendRejected("reason: a reason is required to cordon or drain a node")
    if len(text) > 200:
        raise BackendRejected("reason: at most 200 characters")
    return text
