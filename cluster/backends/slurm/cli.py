"""The few Slurm commands slurmrestd 22.05 cannot do (node drain/resume, signals, comments).

They run with `SLURM_JWT` set to the service identity's token, so the portal's host needs the
Slurm client binaries and slurm.conf but no munge key, exactly like slurmrestd's callers.
"""

from __future__ import annotations

import os
import subprocess

from cluster.backends.base import BackendRejected, BackendUnavailable
from cluster.backends.slurm.rest import RETRYABLE_WORDS
from cluster.backends.slurm.tokens import TokenIssuer


class SlurmCommands:
    """Runs scontrol/scancel/sacctmgr as the portal's service user; arguments never go through a shell."""

    def __init__(self, bin_dir: str, tokens: TokenIssuer, service_user: str, timeout_s: float) -> None:
        self.bin_dir = bin_dir
        self.tokens = tokens
        self.service_user = service_user
        self.timeout_s = timeout_s

    def run(self, program: str, *args: str, what: str, env: dict[str, str] | None = None) -> str:
        env = {**os.environ, **(env or {}), "SLURM_JWT": self.tokens.token_for(self.service_user)}
        try:
            done = subprocess.run(
                [f"{self.bin_dir}/{program}", *args],
                capture_output=True, text=True, timeout=self.timeout_s, env=env, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise BackendUnavailable(f"Slurm could not {what}: {program} timed out after {self.timeout_s:.0f}s") from exc
        except OSError as exc:
            raise BackendUnavailable(f"Slurm could not {what}: cannot run {program}: {exc}") from exc
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()[:300]
            if any(word in message.lower() for word in RETRYABLE_WORDS):
                raise BackendUnavailable(f"Slurm could not {what}: {message}")
            raise BackendRejected(f"Slurm refused to {what}: {message}")
        return done.stdout
