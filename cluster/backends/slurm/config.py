"""Settings the Slurm backend reads, parsed once per backend instance with clear errors.

Read through `django.conf.settings` with defaults, so the backend works with a settings module
that does not know about Slurm yet (the dev cluster's values are the defaults).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# Slurm's main scheduler looks at the first 100 pending jobs per pass (default_queue_depth); a
# backlog much larger only costs slurmctld time and delays the portal's later decisions.
MAX_BACKLOG_GPUS = 4096
PIN_NODES = ("gangs", "all", "none")


@dataclass(frozen=True)
class SlurmConfig:
    """Where slurmrestd is, who the portal is to Slurm, and how portal words map to Slurm's."""

    rest_url: str = "http://127.0.0.1:6820"
    service_user: str = "gridportal"
    jwt_key_file: str = "/etc/slurm/jwt_hs256.key"
    token_lifespan_s: int = 600
    timeout_s: float = 15.0
    output_dir: str = "/var/tmp/portal-slurm"
    partitions: tuple[tuple[str, str], ...] = ()  # (gpu model, partition); default: same name
    cloud_partitions: frozenset[str] = frozenset()
    max_script_bytes: int = 64 * 1024
    backoff_max_s: float = 15.0
    bin_dir: str = "/usr/bin"
    job_prefix: str = "portal"
    min_job_age_s: int = 300  # slurm.conf MinJobAge: how long slurmctld keeps a finished job
    backlog_gpus: int = 64  # GPUs of admitted jobs Slurm may hold queued beyond the free ones
    pin_nodes: str = "gangs"  # gangs | all | none: which jobs go to Slurm with the portal's nodes as required_nodes

    def partition_for(self, gpu_model: str) -> str:
        return dict(self.partitions).get(gpu_model, gpu_model)

    @classmethod
    def from_settings(cls) -> SlurmConfig:
        return cls(
            rest_url=str(_get("SLURM_REST_URL", cls.rest_url)).rstrip("/"),
            service_user=str(_get("SLURM_SERVICE_USER", cls.service_user)),
            jwt_key_file=str(_get("SLURM_JWT_KEY_FILE", cls.jwt_key_file)),
            token_lifespan_s=_positive_int("SLURM_TOKEN_LIFESPAN_S", cls.token_lifespan_s),
            timeout_s=float(_positive_int("SLURM_TIMEOUT_S", int(cls.timeout_s))),
            output_dir=str(_get("SLURM_OUTPUT_DIR", cls.output_dir)).rstrip("/"),
            partitions=parse_partitions(str(_get("SLURM_PARTITIONS", ""))),
            cloud_partitions=frozenset(p for p in str(_get("SLURM_CLOUD_PARTITIONS", "")).split(",") if p),
            max_script_bytes=_positive_int("JOB_MAX_SCRIPT_BYTES", cls.max_script_bytes),
            backoff_max_s=float(_positive_int("SLURM_BACKOFF_MAX_S", int(cls.backoff_max_s))),
            bin_dir=str(_get("SLURM_BIN_DIR", cls.bin_dir)).rstrip("/"),
            job_prefix=_job_prefix(str(_get("SLURM_JOB_PREFIX", cls.job_prefix))),
            min_job_age_s=_positive_int("SLURM_MIN_JOB_AGE_S", cls.min_job_age_s),
            backlog_gpus=_bounded_int("SLURM_BACKLOG", cls.backlog_gpus, 0, MAX_BACKLOG_GPUS),
            pin_nodes=_pin_nodes(str(_get("SLURM_PIN_NODES", cls.pin_nodes))),
        )


def _get(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _positive_int(name: str, default: int) -> int:
    value = _get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"{name}={value!r}: expected a whole number") from None
    if number <= 0:
        raise ImproperlyConfigured(f"{name}={value!r}: must be greater than 0")
    return number


def _bounded_int(name: str, default: int, low: int, high: int) -> int:
    value = _get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"{name}={value!r}: expected a whole number") from None
    if not low <= number <= high:
        raise ImproperlyConfigured(f"{name}={value!r}: must be between {low} and {high}")
    return number


def _pin_nodes(value: str) -> str:
    if value not in PIN_NODES:
        raise ImproperlyConfigured(f"SLURM_PIN_NODES={value!r}: choose one of {', '.join(PIN_NODES)}")
    return value


def _job_prefix(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9]{0,19}", value):
        raise ImproperlyConfigured(f"SLURM_JOB_PREFIX={value!r}: use 1-20 lower-case letters and digits, starting with a letter")
    return value


def parse_partitions(text: str) -> tuple[tuple[str, str], ...]:
    """`a100=gpu-a100,h100=gpu-h100` -> ((a100, gpu-a100), (h100, gpu-h100))."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        model, sep, partition = item.partition("=")
        if not sep or not model or not partition:
            raise ImproperlyConfigured(f"SLURM_PARTITIONS: {item!r} should look like gpu_model=partition")
        pairs.append((model, partition))
    return tuple(pairs)
