"""Notebook states, why a notebook ended, and the server types (changed only by `notebooks.services`)."""

from __future__ import annotations

from django.db import models

from portal.states import Transitions


class NotebookState(models.TextChoices):
    STARTING = "starting", "Starting"  # its job waits for GPUs, or the server is not answering yet
    READY = "ready", "Ready"  # the server answers through the proxy
    WARNED = "warned", "Warned"  # idle or near its lifetime: the owner was told it will be culled
    ENDED = "ended", "Ended"  # stopped, culled, failed or out of time; its job is terminal and its GPUs free


TRANSITIONS = Transitions(
    {
        NotebookState.STARTING: {NotebookState.READY, NotebookState.ENDED},
        NotebookState.READY: {NotebookState.WARNED, NotebookState.ENDED},
        NotebookState.WARNED: {NotebookState.READY, NotebookState.ENDED},
        NotebookState.ENDED: set(),
    }
)
LIVE = frozenset({NotebookState.STARTING, NotebookState.READY, NotebookState.WARNED})
OPEN = frozenset({NotebookState.READY, NotebookState.WARNED})  # the proxy lets the owner in


class EndReason(models.TextChoices):
    NONE = "", "—"
    STOPPED = "stopped", "Stopped by its owner"
    IDLE = "idle", "Culled: idle"
    LIFETIME = "lifetime", "Culled: maximum lifetime reached"
    JOB_ENDED = "job_ended", "Its job ended"
    FAILED = "failed", "The server did not start"


class ServerType(models.TextChoices):
    JUPYTER = "jupyter", "Jupyter"
    CODE_SERVER = "code-server", "code-server (VS Code)"


class EventKind(models.TextChoices):
    STARTED = "started", "Started"
    READY = "ready", "Ready"
    OPENED_BY_OPERATOR = "operator_open", "Opened by an operator"
    WARNED = "warned", "Warned before culling"
    ACTIVE_AGAIN = "active", "Active again"
    ENDED = "ended", "Ended"
