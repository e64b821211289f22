"""Pure rules of checkpoint recovery: names, replica keys, expiry, and the operator's input.

No ORM, no clock, no I/O: callers pass the facts and get plain data back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from artifacts.layout import CHECKPOINTS


class RecoveryInputError(ValueError):
    """Bad input to a restore; `field` names what was wrong, the message says the limit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def stamp(at: datetime) -> str:
    """The night's mark in names, to the minute in UTC: `20260102-0200`."""
    return at.strftime("%Y%m%d-%H%M")


def snapshot_name(at: datetime) -> str:
    return f"checkpoints-{stamp(at)}"


def expires_at(taken_at: datetime, days: int) -> datetime:
    return taken_at + timedelta(days=days)


def is_checkpoint(key: str, team: str) -> bool:
    """Whether a store key is one of the team's jobs' checkpoint files: `<team>/<job id>/checkpoints/...`."""
    parts = key.split("/")
    return len(parts) >= 4 and parts[0] == team and parts[1].isdigit() and parts[2] == CHECKPOINTS and bool(parts[-1])


def job_of(key: str) -> int:
    """The job id of a checkpoint key (`vision/42/checkpoints/x` -> 42)."""
    return int(key.split("/")[1])


@dataclass(frozen=True)
class ReplicaLayout:
    """Where one night's replica of one team's checkpoints lives in the replica bucket."""

    team: str
    name: str

    @property
    def prefix(self) -> str:
        return f"{self.team}/{self.name}/"

    def replica_key(self, store_key: str) -> str:
        """`vision/42/checkpoints/x` in the store -> `vision/<name>/42/checkpoints/x` in the replica."""
        return self.prefix + store_key.split("/", 1)[1]

    def job_prefix(self, job_id: int) -> str:
        return f"{self.prefix}{job_id}/{CHECKPOINTS}/"


def positive_id(raw: object, field: str) -> int:
    """A row id from a form or the API, or RecoveryInputError naming the field."""
    if isinstance(raw, bool):
        raise RecoveryInputError(field, "must be a whole number of at least 1")
    try:
        value = int(str(raw).strip().lstrip("#"))
    except (TypeError, ValueError):
        raise RecoveryInputError(field, f"must be a whole number of at least 1, not {str(raw)[:40]!r}") from None
    if value < 1:
        raise RecoveryInputError(field, f"must be a whole number of at least 1, not {value}")
    return value
