"""JWTs for slurmrestd, one per Unix user, issued by the portal's service identity.

The portal holds Slurm's HS256 key (AuthAltParameters=jwt_key) and signs short-lived tokens whose
`sun` claim names the user a request acts for; Slurm then runs the job as that user. Without the
key it falls back to `scontrol token`, which only root or SlurmUser may run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import threading
import time
from pathlib import Path

from cluster.backends.base import BackendRejected, BackendUnavailable

RENEW_BEFORE_S = 60  # a token this close to expiry is replaced, so a slow request never carries a dead one


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign_token(key: bytes, user: str, now: int, lifespan_s: int) -> str:
    """An HS256 JWT as Slurm's auth/jwt plugin reads it: `sun` is the Slurm user name."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"exp": now + lifespan_s, "iat": now, "sun": user}, separators=(",", ":")).encode())
    signature = _b64(hmac.new(key, header + b"." + claims, hashlib.sha256).digest())
    return (header + b"." + claims + b"." + signature).decode()


class TokenIssuer:
    """Hands out a valid token per user, re-signing only when the cached one is near expiry."""

    def __init__(self, key_file: str, lifespan_s: int, scontrol: str) -> None:
        self.key_file = Path(key_file)
        self.lifespan_s = lifespan_s
        self.scontrol = scontrol
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token_for(self, user: str) -> str:
        now = time.time()
        with self._lock:
            cached = self._cache.get(user)
            if cached and cached[1] - RENEW_BEFORE_S > now:
                return cached[0]
            token = self._issue(user, int(now))
            self._cache[user] = (token, now + self.lifespan_s)
            return token

    def _issue(self, user: str, now: int) -> str:
        try:
            key = self.key_file.read_bytes()
        except OSError:
            return self._issue_with_scontrol(user)
        return sign_token(key, user, now, self.lifespan_s)

    def _issue_with_scontrol(self, user: str) -> str:
        try:
            done = subprocess.run(
                [self.scontrol, "token", f"username={user}", f"lifespan={self.lifespan_s}"],
                capture_output=True, text=True, timeout=15, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendUnavailable(f"cannot issue a Slurm token for {user!r}: {exc}") from exc
        if done.returncode != 0 or "SLURM_JWT=" not in done.stdout:
            raise BackendRejected(
                f"cannot issue a Slurm token for {user!r} (is SLURM_JWT_KEY_FILE readable?): {done.stderr.strip()[:200]}"
            )
        return done.stdout.strip().split("SLURM_JWT=", 1)[1]
