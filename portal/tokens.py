"""`Authorization: Token <key>` authentication against hashed, revocable API tokens."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions

from portal.models import ApiToken, hash_token
from portal.permissions import CHANGE


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Token <key>'.")
        key = header[1].decode(errors="replace")
        token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(key), revoked_at__isnull=True).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        now = timezone.now()
        # Touch last_used at most once a minute so hot tokens do not write on every request.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return self.keyword


def revoke(user: Any, token_id: int) -> bool:
    """Revoke one of the user's own tokens; False if it is not theirs or already revoked."""
    mine = ApiToken.objects.restrict(user, CHANGE).filter(pk=token_id, revoked_at__isnull=True)
    return bool(mine.update(revoked_at=timezone.now()))


def revoke_all(user: Any) -> int:
    """Revoke every live token of the user (after a password change, or a suspected leak); how many."""
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())


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
