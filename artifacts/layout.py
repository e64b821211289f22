"""Pure rules of the artifact store: where a job's files go, which names are allowed, what is kept.

No ORM, no clock, no I/O: callers pass the facts and get plain data back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

OUTPUT = "output"
CHECKPOINTS = "checkpoints"
AREAS = (OUTPUT, CHECKPOINTS)
MAX_PATH_CHARS = 1024  # S3's key limit, and far beyond any sane file name
RETENTION_MIN_DAYS = 1
RETENTION_MAX_DAYS = 3650
BYTES_PER_GB = 10**9
DAYS_PER_MONTH = Decimal("30")


class ArtifactInputError(ValueError):
    """Bad input about artifacts; `field` names what was wrong, the message says the limit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class JobLayout:
    """Where one job's files live, as keys relative to the store's root."""

    team: str
    job_id: int

    @property
    def prefix(self) -> str:
        return f"{self.team}/{self.job_id}/"

    @property
    def output(self) -> str:
        return f"{self.prefix}{OUTPUT}/"

    @property
    def checkpoints(self) -> str:
        return f"{self.prefix}{CHECKPOINTS}/"


def team_prefix(team: str) -> str:
    return f"{team}/"


def clean_path(path: str, field: str = "path") -> str:
    """A file's path inside a job's location (`output/model.pt`), or ArtifactInputError naming what is wrong.

    Only relative names below `output/` or `checkpoints/`: no `..`, no absolute paths, no backslashes or
    control characters, so a path can never leave the job's own location on either store.
    """
    if not isinstance(path, str) or not path:
        raise ArtifactInputError(field, "a path is required, e.g. output/model.pt")
    if len(path) > MAX_PATH_CHARS:
        raise ArtifactInputError(field, f"at most {MAX_PATH_CHARS} characters, got {len(path)}")
    if path.startswith("/") or "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ArtifactInputError(field, "must be a relative path without backslashes or control characters")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ArtifactInputError(field, "must not contain '..', '.' or empty segments")
    if parts[0] not in AREAS or len(parts) < 2:
        raise ArtifactInputError(field, f"must be a file under {' or '.join(a + '/' for a in AREAS)}")
    return path


def check_retention(days: object) -> int | None:
    """A retention in whole days within the bounds, or None (keep forever)."""
    if days is None or days == "":
        return None
    if isinstance(days, bool) or not isinstance(days, int | str):
        raise ArtifactInputError(
            "retention_days", f"must be a whole number of days from {RETENTION_MIN_DAYS} to {RETENTION_MAX_DAYS}"
        )
    try:
        value = int(days)
    except ValueError:
        raise ArtifactInputError(
            "retention_days", f"must be a whole number of days from {RETENTION_MIN_DAYS} to {RETENTION_MAX_DAYS}"
        ) from None
    if not RETENTION_MIN_DAYS <= value <= RETENTION_MAX_DAYS:
        raise ArtifactInputError("retention_days", f"must be from {RETENTION_MIN_DAYS} to {RETENTION_MAX_DAYS} days, got {value}")
    return value


def check_upload_size(size: object, limit: int) -> int:
    """The declared size of an upload in bytes, at most `limit`."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ArtifactInputError("size", f"the file's size in bytes is required, a whole number from 0 to {limit}")
    if not 0 <= size <= limit:
        raise ArtifactInputError("size", f"at most {limit} bytes per upload, got {size}")
    return size


def expired_before(now: datetime, days: int) -> datetime:
    """Jobs that finished before this moment are past a retention of `days`."""
    return now - timedelta(days=days)


def monthly_storage_cost(usage_bytes: int, rate_per_gb_month: Decimal) -> Decimal:
    """What keeping `usage_bytes` for a month costs at the rate, to the cent."""
    cost = Decimal(usage_bytes) / BYTES_PER_GB * rate_per_gb_month
    return cost.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def storage_cost(usage_bytes: int, rate_per_gb_month: Decimal, days: Decimal) -> Decimal:
    """What keeping `usage_bytes` for `days` costs (a month is 30 days), to the cent."""
    cost = Decimal(usage_bytes) / BYTES_PER_GB * rate_per_gb_month * days / DAYS_PER_MONTH
    return cost.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
