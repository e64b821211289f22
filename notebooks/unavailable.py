"""What the proxy says when a notebook's server cannot be reached (pure: plain values in, plain values out).

The owner (or an operator) asked for a notebook they may open, but its server is starting, has
ended (stopped, culled, its job preempted or failed) or does not answer (its node failed, it
crashed). The answer names the session's state and what to do next, and links to its page; it is
the same words as an HTML page for a browser and as JSON for the server's own scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RETRY_STARTING_S = 5  # a starting server is usually up within seconds (docs/notebooks.md: Figures)


@dataclass(frozen=True)
class Session:
    """The notebook as the proxy found it: its state, why it ended, and its job's state."""

    notebook_id: int
    state: str
    state_label: str
    end_reason: str
    end_reason_label: str
    detail: str
    job_state: str
    server_label: str = "Jupyter"


@dataclass(frozen=True)
class Unavailable:
    """The proxy's answer: HTTP status, a headline, what the user can do, and when to retry (None: no use)."""

    status: int
    headline: str
    advice: str
    retry_after_s: int | None

    def as_json(self, session: Session, page: str) -> dict[str, Any]:
        return {
            "error": "notebook_unavailable", "notebook": session.notebook_id, "state": session.state,
            "end_reason": session.end_reason, "detail": session.detail, "job_state": session.job_state,
            "message": f"{self.headline} {self.advice}", "page": page, "retry_after_s": self.retry_after_s,
        }  # fmt: skip


def explain(session: Session, cause: str = "") -> Unavailable:
    """Why the server cannot be reached. `cause`: the upstream error when the notebook is open but did not answer."""
    n = f"Notebook #{session.notebook_id}"
    if session.state == "starting":
        return Unavailable(
            503, f"{n} is starting.",
            f"Its job is {session.job_state}: it waits for GPUs or for {session.server_label} to answer. "
            "Its page shows an Open button once the server is ready.",
            RETRY_STARTING_S,
        )  # fmt: skip
    if session.state == "ended":
        why = session.end_reason_label or "it ended"
        detail = f" ({session.detail})" if session.detail and session.detail.lower() not in why.lower() else ""
        return Unavailable(
            503, f"{n} has ended: {why}{detail}.",
            f"Its server is gone and its GPUs are free. {_after_end(session.end_reason)}",
            None,
        )  # fmt: skip
    return Unavailable(
        502, f"{n}'s server did not answer{f' ({cause})' if cause else ''}.",
        f"Its job is still {session.job_state}, so the server may be restarting, or its node may have failed; "
        "the portal checks its notebooks every few seconds and ends this one if its job is gone. "
        "Try again in a moment, or stop it from its page and start a new one.",
        None,
    )  # fmt: skip


def _after_end(reason: str) -> str:
    if reason == "idle":
        return "It was culled because its kernel and GPUs were idle. Start a new notebook to go on."
    if reason == "lifetime":
        return "It reached its maximum lifetime. Start a new notebook to go on (a longer lifetime can be asked for)."
    if reason == "job_ended":
        return "Its job ended (preempted, failed, or out of time). Start a new notebook to go on."
    if reason == "failed":
        return "Its server never answered; its page says why. Start a new notebook to try again."
    return "Start a new notebook to go on."
