"""`Authorization: Token <key>` authentication against hashed, revocable API tokens.

A verified token (with its user and the user's teams) is kept in the shared Redis cache for
API_TOKEN_CACHE_S, so a busy CI script is not looked up in the database on every request. Revoking
a token, revoking all of a user's, saving or deleting a user, a token or a membership, and saving a
team drop the entries concerned at once and again once the change commits, so revocation and deactivation take effect on the next request in every process. Only a
cache every process shares is used: with none (no Redis), or while Redis is unreachable, every
request reads the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone
from rest_framework import authentication, exceptions

from portal.cache import REDIS_ERRORS, ResilientRedisCache
from portal.models import ApiToken, hash_token
from portal.permissions import CHANGE

# Sent with `key_hashes` when tokens are revoked (portal.fanout closes the websockets they opened).
tokens_revoked = Signal()


def token_cache_key(key_hash: str) -> str:
    return f"api-token:{key_hash}"


def shared_cache() -> ResilientRedisCache | None:
    """The default cache when every process shares it (Redis, reachable now); else None."""
    cache = caches["default"]
    if isinstance(cache, ResilientRedisCache) and not cache.breaker.is_open and settings.API_TOKEN_CACHE_S > 0:
        return cache
    return None


def read_shared(keys: list[str]) -> dict[str, Any] | None:
    """`keys` from the shared cache in one round trip (straight from Redis, never a process's fallback
    memory); None when there is no shared cache or it fails."""
    cache = shared_cache()
    if cache is None:
        return None
    try:
        found: dict[str, Any] = RedisCache.get_many(cache, keys)
    except REDIS_ERRORS as exc:
        cache.breaker.failed(exc)
        return None
    return found


def remember(token: ApiToken) -> None:
    cache = shared_cache()
    if cache is None:
        return
    try:
        RedisCache.set(cache, token_cache_key(token.key_hash), token, timeout=settings.API_TOKEN_CACHE_S)
    except REDIS_ERRORS as exc:
        cache.breaker.failed(exc)


def forget(key_hashes: Iterable[str]) -> None:
    """Drop cached tokens now and again once the current transaction commits (a request that read the
    token before the commit may have stored it meanwhile)."""
    keys = [token_cache_key(h) for h in key_hashes]
    if not keys:
        return

    def drop() -> None:
        cache = caches["default"]
        if not isinstance(cache, ResilientRedisCache):
            return
        try:
            RedisCache.delete_many(cache, keys)
        except REDIS_ERRORS as exc:  # an entry left behind expires within API_TOKEN_CACHE_S
            cache.breaker.failed(exc)

    drop()
    transaction.on_commit(drop, robust=True)


def forget_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Signal receiver: a user saved or deleted (deactivated, say) is checked afresh on the next request."""
    forget(ApiToken.objects.filter(user_id=instance.pk).values_list("key_hash", flat=True))


def forget_token(sender: Any, instance: ApiToken, **kwargs: Any) -> None:
    forget([instance.key_hash])


def forget_member(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Signal receiver: a membership saved or deleted changes the teams a cached user carries."""
    forget(ApiToken.objects.filter(user_id=instance.user_id).values_list("key_hash", flat=True))


def forget_team_members(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Signal receiver: a team saved (its slug renamed, say) changes what its members' cached users carry."""
    forget(ApiToken.objects.filter(user__memberships__team_id=instance.pk).values_list("key_hash", flat=True))


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def presented_key(self, request: Any) -> str | None:
        """The key in `Authorization: Token <key>`; None without such a header; 401 for a malformed one."""
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Token <key>'.")
        return header[1].decode(errors="replace")

    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        key = self.presented_key(request)
        if key is None:
            return None
        key_hash = hash_token(key)
        found = read_shared([token_cache_key(key_hash)]) or {}
        return self.verify(key_hash, found.get(token_cache_key(key_hash)))

    def verify(self, key_hash: str, cached: ApiToken | None) -> tuple[Any, ApiToken]:
        token = cached
        if token is None:
            token = (
                ApiToken.objects.select_related("user")
                .defer("user__password")  # what is cached holds no password hash
                .filter(key_hash=key_hash, revoked_at__isnull=True)
                .first()
            )
            if token is None or not token.user.is_active:
                raise exceptions.AuthenticationFailed("Invalid or revoked token.")
            token.user.team_slugs  # noqa: B018 - read now, so the cached user carries its teams
            remember(token)
        now = timezone.now()
        # Touch last_used at most once a minute so hot tokens do not write on every request.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
            remember(token)
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return self.keyword


def revoke(user: Any, token_id: int) -> bool:
    """Revoke one of the user's own tokens; False if it is not theirs or already revoked."""
    mine = ApiToken.objects.restrict(user, CHANGE).filter(pk=token_id, revoked_at__isnull=True)
    hashes = list(mine.values_list("key_hash", flat=True))
    revoked = bool(mine.update(revoked_at=timezone.now()))
    forget(hashes)
    _end_token_sockets(hashes)
    return revoked


def revoke_all(user: Any) -> int:
    """Revoke every live token of the user (after a password change, or a suspected leak); how many."""
    live = ApiToken.objects.filter(user=user, revoked_at__isnull=True)
    hashes = list(live.values_list("key_hash", flat=True))
    count = live.update(revoked_at=timezone.now())
    forget(hashes)
    _end_token_sockets(hashes)
    return count


def _end_token_sockets(hashes: Iterable[str]) -> None:
    """Tell whoever listens (portal.fanout: the websockets these tokens opened) that they were revoked."""
    tokens_revoked.send(sender=ApiToken, key_hashes=list(hashes))


def live_count(user: Any) -> int:
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).count()


def offer_revocation_after_password_change(request: Any, user: Any, **kwargs: Any) -> None:
    """A new password does not end a token's access: say so on the next page, and let the tokens page
    offer to revoke them all at once."""
    from django.contrib import messages

    count = live_count(user)
    if count and request is not None and hasattr(request, "session"):
        request.session[OFFER_REVOKE_ALL] = True
        messages.warning(
            request, f"Your password changed, but your {count} API token(s) still work. Revoke them on the Tokens page if needed."
        )


OFFER_REVOKE_ALL = "offer-token-revocation"
