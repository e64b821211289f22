"""Who is behind each open websocket, as the live pages' checks read it, loaded in one go per process.

Every message a live page is sent is first checked against the socket's viewer: the session that
opened it still stands, the user is active, and the model's rule lets the user see what the
message is about. Asking the database per socket per message was most of the cost of a thousand
live pages, so the facts those checks read are loaded for all of a process's sockets at once
(three queries), kept, and loaded again every REFRESH_S and as soon as a change is announced
(portal.fanout.announce_access_change: a membership, a user's password, roles or deactivation,
a sign-out).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from portal.models import ApiToken, Membership, TeamRole, User

# How long cached facts may be trusted without an announcement: the bound on how late a socket
# learns of a change whose announcement was lost (Redis down between processes).
REFRESH_S = 2.0


@dataclass(frozen=True)
class Viewer:
    """A user as the access rules read one (portal.permissions), frozen when loaded."""

    pk: int
    is_active: bool
    is_operator: bool
    is_superuser: bool
    is_finance: bool
    team_ids: tuple[int, ...]
    lead_team_ids: tuple[int, ...]
    auth_hash: str  # the user's session hash: a password change changes it
    is_authenticated: bool = True


def load_viewers(user_ids: Iterable[int]) -> dict[int, Viewer]:
    """The viewers of these users (two queries); a user who no longer exists is left out."""
    ids = set(user_ids)
    teams: dict[int, list[int]] = defaultdict(list)
    leads: dict[int, list[int]] = defaultdict(list)
    for user_id, team_id, role in Membership.objects.filter(user_id__in=ids).values_list("user_id", "team_id", "role"):
        teams[user_id].append(team_id)
        if role == TeamRole.LEAD:
            leads[user_id].append(team_id)
    return {
        user.pk: Viewer(
            pk=user.pk,
            is_active=user.is_active,
            is_operator=user.is_operator,
            is_superuser=user.is_superuser,
            is_finance=user.is_finance,
            team_ids=tuple(sorted(teams[user.pk])),
            lead_team_ids=tuple(sorted(leads[user.pk])),
            auth_hash=user.get_session_auth_hash(),
        )
        for user in User.objects.filter(pk__in=ids)
    }


TOKEN_KEY_PREFIX = "token:"  # a socket opened with an API token stands as long as the token does


def token_standing_key(key_hash: str) -> str:
    """What a socket opened with an API token stands on, among the session keys: its token's hash."""
    return f"{TOKEN_KEY_PREFIX}{key_hash}"


def standing_sessions(keys: Iterable[str]) -> set[str]:
    """The session keys among `keys` that still stand: not signed out, not expired; and, for sockets opened
    with an API token, the token keys whose token is not revoked."""
    wanted = set(keys)
    tokens = {k for k in wanted if k.startswith(TOKEN_KEY_PREFIX)}
    wanted -= tokens
    standing = set()
    if tokens:
        hashes = [k.removeprefix(TOKEN_KEY_PREFIX) for k in tokens]
        live = ApiToken.objects.filter(key_hash__in=hashes, revoked_at__isnull=True).values_list("key_hash", flat=True)
        standing = {token_standing_key(h) for h in live}
    return standing | _standing_session_keys(wanted)


def _standing_session_keys(wanted: set[str]) -> set[str]:
    if not wanted:
        return set()
    store = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    model_class = getattr(store, "get_model_class", None)
    if model_class is not None:  # the database engines: one query for every socket
        rows = model_class().objects.filter(session_key__in=wanted, expire_date__gt=timezone.now())
        return set(rows.values_list("session_key", flat=True))
    return {key for key in wanted if store().exists(key)}


class Viewers:
    """The viewers and standing sessions of one process's sockets, and what must be loaded again.

    Announcements arrive from other threads (signal handlers) and from the channel layer; they
    only mark facts stale, the next check loads them.
    """

    def __init__(self) -> None:
        self.by_user: dict[int, Viewer] = {}
        self.sessions: set[str] = set()
        self._lock = threading.Lock()
        self._stale_users: set[int] = set()
        self._stale_sessions: set[str] = set()
        self._loaded_at = -math.inf

    def forget(self, users: Iterable[int] = (), sessions: Iterable[str] = ()) -> None:
        with self._lock:
            self._stale_users.update(users)
            self._stale_sessions.update(sessions)

    def due(self, user_ids: Iterable[int], session_keys: Iterable[str]) -> bool:
        """Whether facts these sockets need are missing, announced stale, or older than REFRESH_S."""
        if time.monotonic() - self._loaded_at >= REFRESH_S:
            return True
        with self._lock:
            if self._stale_users or self._stale_sessions:
                return True
        return any(u not in self.by_user for u in user_ids) or any(k not in self.sessions for k in session_keys)

    def load(self, user_ids: Iterable[int], session_keys: Iterable[str]) -> None:
        """Load every fact these sockets need (in a worker thread: it queries the database)."""
        with self._lock:
            self._stale_users.clear()
            self._stale_sessions.clear()
        started = time.monotonic()
        self.by_user = load_viewers(user_ids)
        self.sessions = standing_sessions(session_keys)
        self._loaded_at = started
