"""The notebooks app's only write path: start, refresh, record activity, open (proxy), warn, cull, stop.

A notebook is a portal job of kind `interactive` made by jobs.services under the owner's team
quota and priority class, so admission, fair share, preemption and billing treat it as any job.
Ending a notebook cancels its job through jobs.services: the job is terminal at once, and its GPUs
are free for the next admission cycle. The server's token is never stored: it is an HMAC of the
row's salt under SECRET_KEY, made again when the proxy or the job's environment needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.services.notify import notify
from cluster.models import JobEfficiency
from jobs import services as job_services
from jobs.models import Job, JobKind
from jobs.spec import SpecError
from jobs.states import TERMINAL, JobState
from notebooks import culling, launch, servers
from notebooks.models import Notebook, NotebookEvent
from notebooks.states import LIVE, OPEN, TRANSITIONS, EndReason, EventKind, NotebookState, ServerType
from portal.access import is_operator
from portal.models import hash_token
from portal.queue import after_commit
from portal.states import move

log = logging.getLogger(__name__)
START_FIELDS = frozenset({"team", "name", "gpu_model", "gpus", "server_type", "lifetime_s", "priority"})
ACTIVITY_EVERY_S = 5.0  # the proxy writes a notebook's last activity at most this often
OPERATOR_AUDIT_EVERY = timedelta(hours=1)  # one event per operator and notebook per hour, not one per request


class NotebookActionError(Exception):
    """An action on a notebook was refused; the message says why."""


class NotebookNotOpen(NotebookActionError):
    """The notebook exists and may be opened, but its server is not ready (or has ended)."""

    def __init__(self, message: str, notebook: Notebook) -> None:
        super().__init__(message)
        self.notebook = notebook


# --- the token -------------------------------------------------------------------------------


def token_for(notebook: Notebook) -> str:
    return hmac.new(
        settings.SECRET_KEY.encode(), f"notebook:{notebook.pk}:{notebook.token_salt}".encode(), hashlib.sha256
    ).hexdigest()


def job_environment(job: Job) -> dict[str, str]:
    """What a notebook's job finds in its environment at dispatch (jobs.services.JOB_ENVIRONMENT): the
    server's token and the proxy's path. Not kept in the job's own env, which the team can read."""
    if job.kind != JobKind.INTERACTIVE:
        return {}
    notebook = Notebook.objects.filter(job_id=job.pk).first()
    if notebook is None:
        return {}
    token = token_for(notebook)
    if notebook.server_type == ServerType.CODE_SERVER:
        return {launch.HASHED_PASSWORD_ENV: launch.hashed_password(token), launch.BASE_URL_ENV: launch.base_url(notebook.pk)}
    return {launch.TOKEN_ENV: token, launch.BASE_URL_ENV: launch.base_url(notebook.pk)}


# --- start -----------------------------------------------------------------------------------


def _start_input(raw: Any) -> tuple[str, int, int]:
    if not isinstance(raw, dict):
        raise SpecError({"non_field_errors": ["expected a JSON object"]})
    errors: dict[str, list[str]] = {k: ["is not a notebook field"] for k in sorted(set(raw) - START_FIELDS)}
    server_type = str(raw.get("server_type") or ServerType.JUPYTER)
    if server_type not in settings.NOTEBOOK_SERVER_TYPES:
        errors["server_type"] = [f"must be one of {', '.join(settings.NOTEBOOK_SERVER_TYPES)}, not {server_type[:40]!r}"]
    limit = settings.NOTEBOOK_MAX_LIFETIME_S
    lifetime = _whole(raw.get("lifetime_s", settings.NOTEBOOK_DEFAULT_LIFETIME_S), "lifetime_s", 60, limit, errors)
    gpus = _whole(raw.get("gpus", 1), "gpus", 1, settings.NOTEBOOK_MAX_GPUS, errors)
    if errors:
        raise SpecError(errors)
    return server_type, lifetime, gpus


def _whole(value: Any, field: str, low: int, high: int, errors: dict[str, list[str]]) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors[field] = ["must be a whole number"]
        return 0
    if isinstance(value, bool) or not low <= number <= high:
        errors[field] = [f"must be between {low} and {high}, not {value!r}"[:200]]
    return number


def start(user: Any, raw: Any) -> Notebook:
    """Validate, then make the notebook's job and its row in one transaction: both, or nothing."""
    server_type, lifetime, gpus = _start_input(raw)
    backend = settings.CLUSTER_BACKEND
    request = {
        "name": str(raw.get("name") or f"notebook-{user.username}")[:63], "kind": JobKind.INTERACTIVE,
        "gpu_model": raw.get("gpu_model") or "", "gpus_per_node": gpus, "walltime_s": lifetime,
        **{k: raw[k] for k in ("team", "priority") if raw.get(k)}, **servers.launcher_for(backend).job_fields(server_type),
    }  # fmt: skip
    salt = secrets.token_hex(16)
    with transaction.atomic():
        job = job_services.submit_request(user, request).jobs()[0]
        notebook = Notebook.objects.create(
            job=job, owner=user, server_type=server_type, token_salt=salt, token_hash="", lifetime_s=lifetime
        )
        Notebook.objects.filter(pk=notebook.pk).update(token_hash=hash_token(token_for(notebook)))
        NotebookEvent.objects.create(notebook=notebook, kind=EventKind.STARTED, actor=user.username, detail=f"job #{job.pk}")
        after_commit("notebooks.tasks.refresh_notebook", notebook.pk)
    notebook.refresh_from_db()
    return notebook


# --- refresh: find the server, see it answer, follow the job ---------------------------------


@dataclass(frozen=True)
class ServerStatus:
    """What the server said on /api/status: whether it answered, and its kernels' last activity."""

    answered: bool
    last_activity: datetime | None = None


def server_status(url: str, notebook: Notebook, timeout: float = 2.0) -> ServerStatus:
    """Ask the server whether it is up and when it was last used (Jupyter's kernels, code-server's heartbeat)."""
    kind = notebook.server_type
    try:
        answer = httpx.get(
            f"{url}{launch.status_path(kind, notebook.pk)}",
            headers=launch.upstream_auth(kind, token_for(notebook)),
            timeout=timeout,
        )
    except httpx.HTTPError:
        return ServerStatus(False)
    if answer.status_code != 200:
        return ServerStatus(False)
    with contextlib.suppress(ValueError):
        return ServerStatus(True, launch.last_activity(kind, answer.json()))
    return ServerStatus(True)


def _move(notebook: Notebook, to: str, actor: str, kind: str, note: str = "", **fields: Any) -> bool:
    with transaction.atomic():
        if move(Notebook, notebook.pk, to, TRANSITIONS, **fields) is None:
            return False
        NotebookEvent.objects.create(notebook=notebook, kind=kind, actor=actor, detail=note[:300])
    notebook.state = to
    for name, value in fields.items():
        setattr(notebook, name, value)
    return True


def refresh(notebook_id: int) -> str | None:
    """Bring one notebook in line with its job and server; returns its state (None: no such notebook)."""
    notebook = Notebook.objects.select_related("job", "job__team", "owner").filter(pk=notebook_id).first()
    if notebook is None or notebook.state == NotebookState.ENDED:
        return None if notebook is None else notebook.state
    job = notebook.job
    if job.state in TERMINAL:
        _end(notebook, EndReason.JOB_ENDED, "system", f"job #{job.pk} {job.state}")
    elif notebook.state in OPEN and job.state != JobState.RUNNING:
        # Preempted (or requeued after its node failed): the server and its kernels are gone, and a later
        # run would be a new server with nothing in it. The session ends and its GPUs are not asked for again.
        _end(notebook, EndReason.JOB_ENDED, "system", f"job #{job.pk} was preempted ({job.state}): its server is gone")
    elif job.state == JobState.RUNNING and notebook.state == NotebookState.STARTING:
        _find_server(notebook, job)
    elif notebook.state in OPEN and notebook.server_url:
        status = server_status(notebook.server_url, notebook)
        if status.last_activity is not None:
            _saw_activity(notebook.pk, status.last_activity)
    return notebook.state


def _find_server(notebook: Notebook, job: Job) -> None:
    launcher = servers.launcher_for(job.backend)
    try:
        found = launcher.locate(notebook, job, token_for(notebook))
    except servers.LaunchFailed as exc:
        _end(notebook, EndReason.FAILED, "system", str(exc))
        return
    if found is not None and not notebook.server_url:
        url, pid = found
        if not Notebook.objects.filter(pk=notebook.pk, server_url="").update(server_url=url, server_pid=pid):
            if pid:  # another process located it first: ours is one too many
                servers.stop_local_server(pid, notebook.pk)
            notebook.refresh_from_db()
        else:
            notebook.server_url, notebook.server_pid = url, pid
    now = timezone.now()
    if notebook.server_url and server_status(notebook.server_url, notebook).answered:
        _move(notebook, NotebookState.READY, "system", EventKind.READY, notebook.server_url, ready_at=now, last_activity=now)
    elif job.started_at and now - job.started_at > timedelta(seconds=settings.NOTEBOOK_START_TIMEOUT_S):
        _end(notebook, EndReason.FAILED, "system", f"the server did not answer within {settings.NOTEBOOK_START_TIMEOUT_S} s")


def wait_ready(notebook_id: int, timeout_s: float, poll_s: float = 0.1) -> str | None:
    """Refresh until the notebook is ready or has ended (tests, bench, the start of a session)."""
    deadline = timezone.now() + timedelta(seconds=timeout_s)
    state = refresh(notebook_id)
    while state == NotebookState.STARTING and timezone.now() < deadline:
        time.sleep(poll_s)
        state = refresh(notebook_id)
    return state


def _saw_activity(notebook_id: int, at: datetime) -> None:
    Notebook.objects.filter(Q(last_activity__lt=at) | Q(last_activity__isnull=True), pk=notebook_id).update(last_activity=at)


def record_proxy_activity(notebook_id: int) -> None:
    """The proxy served the owner a request: the notebook is in use (written at most every few seconds)."""
    now = timezone.now()
    Notebook.objects.filter(
        Q(last_activity__lt=now - timedelta(seconds=ACTIVITY_EVERY_S)) | Q(last_activity__isnull=True),
        pk=notebook_id, state__in=OPEN,
    ).update(last_activity=now)  # fmt: skip


# --- open: who may reach the server ----------------------------------------------------------


@dataclass(frozen=True)
class ProxyTarget:
    """Where the proxy sends one request: the server's URL on the node, its kind, and the token it adds."""

    notebook_id: int
    url: str
    token: str
    server_type: str = ServerType.JUPYTER

    def path(self, portal_path: str) -> str:
        return launch.upstream_path(self.server_type, self.notebook_id, portal_path)

    def auth(self) -> dict[str, str]:
        return launch.upstream_auth(self.server_type, self.token)


def proxy_target(user: Any, notebook_id: int) -> ProxyTarget | None:
    """The server behind notebook `notebook_id` if `user` may open it (its owner, or an operator, audited);
    None when the user may not see it. Raises NotebookNotOpen while it is not ready."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    notebook = Notebook.objects.restrict(user).select_related("job").filter(pk=notebook_id).first()
    if notebook is None:
        return None
    if notebook.state not in OPEN or not notebook.server_url:
        raise NotebookNotOpen(f"notebook #{notebook.pk} is {notebook.get_state_display().lower()}", notebook)
    if notebook.owner_id != user.pk and is_operator(user):
        _audit_operator_open(notebook, user)
    return ProxyTarget(notebook.pk, notebook.server_url, token_for(notebook), notebook.server_type)


def server_unreachable(notebook_id: int) -> Notebook:
    """The proxy could not reach an open notebook's server: if its job no longer runs (preempted, failed
    with its node), end the notebook now rather than at the next cycle. Returns the row as it stands."""
    notebook = Notebook.objects.select_related("job").get(pk=notebook_id)
    if notebook.state != NotebookState.ENDED and notebook.job.state != JobState.RUNNING:
        refresh(notebook_id)
        notebook = Notebook.objects.select_related("job").get(pk=notebook_id)
    return notebook


def _audit_operator_open(notebook: Notebook, user: Any) -> None:
    recent = timezone.now() - OPERATOR_AUDIT_EVERY
    seen = NotebookEvent.objects.filter(notebook=notebook, kind=EventKind.OPENED_BY_OPERATOR, actor=user.username, at__gte=recent)
    if not seen.exists():
        NotebookEvent.objects.create(
            notebook=notebook, kind=EventKind.OPENED_BY_OPERATOR, actor=user.username,
            detail=f"opened {notebook.owner.username}'s notebook as an operator",
        )  # fmt: skip


# --- stop, cull ------------------------------------------------------------------------------


def can_stop(user: Any, notebook: Notebook) -> bool:
    return bool(user.is_authenticated and (notebook.owner_id == user.pk or is_operator(user)))


def stop(user: Any, notebook: Notebook) -> Notebook:
    if not can_stop(user, notebook):
        raise NotebookActionError("only the notebook's owner or an operator may stop it")
    if notebook.state == NotebookState.ENDED:
        raise NotebookActionError(f"notebook #{notebook.pk} has already ended")
    _end(notebook, EndReason.STOPPED, user.username, f"stopped by {user.username}")
    notebook.refresh_from_db()
    return notebook


def _end(notebook: Notebook, reason: str, actor: str, detail: str) -> None:
    """End the notebook and cancel its job (terminal at once: its GPUs are free), then stop its server."""
    if not _move(
        notebook,
        NotebookState.ENDED,
        actor,
        EventKind.ENDED,
        detail,
        end_reason=reason,
        ended_at=timezone.now(),
        detail=detail[:300],
    ):
        return
    job = Job.objects.select_related("team", "owner").get(pk=notebook.job_id)
    if job.state not in TERMINAL:
        with contextlib.suppress(job_services.JobActionError):  # it ended meanwhile
            job_services.cancel(job.owner, job, f"notebook #{notebook.pk}: {detail}")
    notebook.refresh_from_db(fields=["server_pid"])  # another process may have started the server since this row was read
    notebook.job = job  # as it is now (dispatched since the caller read it, perhaps)
    servers.launcher_for(job.backend).stop(notebook)


def policy() -> culling.Policy:
    return culling.Policy(idle_s=settings.NOTEBOOK_IDLE_S, warn_s=settings.NOTEBOOK_WARN_S)


def facts(notebook: Notebook, now: datetime) -> culling.Facts:
    started = notebook.ready_at or notebook.created_at
    efficiency = JobEfficiency.objects.filter(portal_job_id=notebook.job_id).first()
    # No telemetry for the job yet counts as idle GPUs: only evidence of work keeps a quiet notebook alive.
    gpu_idle_since = started if efficiency is None else efficiency.idle_since
    return culling.Facts(now, started, notebook.lifetime_s, notebook.last_activity, gpu_idle_since, notebook.warned_at)


def judge(notebook: Notebook, now: datetime | None = None) -> culling.Decision:
    """Warn, withdraw a warning, cull or keep one ready notebook, by the pure rule in notebooks.culling."""
    now = now or timezone.now()
    decision = culling.decide(facts(notebook, now), policy())
    if decision.action == culling.Action.CULL:
        reason = EndReason.IDLE if decision.why == "idle" else EndReason.LIFETIME
        _end(notebook, reason, "culler", "culled: " + ("idle" if reason == EndReason.IDLE else "maximum lifetime reached"))
    elif decision.action == culling.Action.WARN:
        _warn(notebook, decision, now)
    elif decision.action == culling.Action.UNWARN:
        _move(notebook, NotebookState.READY, "culler", EventKind.ACTIVE_AGAIN, "in use again", warned_at=None)
    return decision


def _warn(notebook: Notebook, decision: culling.Decision, now: datetime) -> None:
    assert decision.cull_at is not None  # a warning always says when
    minutes = max(1, round((decision.cull_at - now).total_seconds() / 60))
    why = "it has been idle" if decision.why == "idle" else "it reaches its maximum lifetime"
    detail = f"will be culled in about {minutes} min: {why}"
    with transaction.atomic():
        if _move(notebook, NotebookState.WARNED, "culler", EventKind.WARNED, detail, warned_at=now):
            body = f"Your notebook #{notebook.pk} {detail}. Use it (or stop it) to keep or free its GPUs."
            notify([notebook.owner], f"Notebook #{notebook.pk} will be culled", body, team_id=notebook.job.team_id)


def cull_cycle(now: datetime | None = None) -> dict[str, int]:
    """One pass over the live notebooks: follow their jobs and servers, then warn or cull the idle ones."""
    counts = {"refreshed": 0, "warned": 0, "culled": 0}
    for notebook_id in list(Notebook.objects.filter(state__in=LIVE).values_list("pk", flat=True)):
        try:
            refresh(notebook_id)
        except Exception:  # one broken notebook must not stop the cycle for the others
            log.exception("notebook %s: refresh failed", notebook_id)
            continue
        counts["refreshed"] += 1
        notebook = Notebook.objects.select_related("job", "owner").filter(pk=notebook_id, state__in=OPEN).first()
        if notebook is not None:
            action = judge(notebook, now).action
            counts["warned"] += action == culling.Action.WARN
            counts["culled"] += action == culling.Action.CULL
    return counts
