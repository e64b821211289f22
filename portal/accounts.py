"""allauth adapters: accounts are made by operators or an identity provider, never by self-signup.

An OpenID Connect sign-in may create the account (the provider vouches for the person); each such
sign-in sets the user's teams from a claim (portal/oidc.py). Signing out can end the provider's
session too (RP-initiated logout) when OIDC_RP_LOGOUT is on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import requests
from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialLogin
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.conf import settings
from django.db.models import Q
from django.forms import Form
from django.http import HttpRequest
from django.shortcuts import resolve_url

from portal.models import User
from portal.oidc import sync_memberships, unique_username, username_candidate

logger = logging.getLogger(__name__)

OIDC_PROVIDER = "openid_connect"
OIDC_PROVIDER_ID = "sso"  # the app's provider_id in settings.SOCIALACCOUNT_PROVIDERS
ID_TOKEN_SESSION_KEY = "oidc_id_token"
ID_TOKEN_REQUEST_ATTR = "_oidc_id_token"


class NoSignupAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: Any) -> bool:
        return False

    def login(self, request: HttpRequest, user: Any) -> None:
        super().login(request, user)
        # Kept after Django's login (which may start a new session) for the sign-out's id_token_hint.
        id_token = getattr(request, ID_TOKEN_REQUEST_ATTR, None)
        if id_token:
            request.session[ID_TOKEN_SESSION_KEY] = id_token

    def get_logout_redirect_url(self, request: HttpRequest) -> str:
        local = str(super().get_logout_redirect_url(request))
        id_token = request.session.get(ID_TOKEN_SESSION_KEY) if hasattr(request, "session") else None
        if not getattr(settings, "OIDC_RP_LOGOUT", False) or not id_token:
            return local
        endpoint = end_session_endpoint(request)
        if not endpoint:
            return local
        params = {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": request.build_absolute_uri(resolve_url(local)),
            "client_id": getattr(settings, "OIDC_CLIENT_ID", "") or "",
        }
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


def end_session_endpoint(request: HttpRequest) -> str | None:
    """The provider's end_session_endpoint from its discovery document; None if it has none or is unreachable."""
    try:
        config = OpenIDConnectOAuth2Adapter(request, OIDC_PROVIDER_ID).openid_config
    except (requests.RequestException, OAuth2Error, ValueError, LookupError) as error:
        logger.warning("oidc sign-out: the provider's discovery document could not be read (%s); local sign-out only", error)
        return None
    endpoint = config.get("end_session_endpoint")
    return endpoint if isinstance(endpoint, str) and endpoint.startswith(("https://", "http://")) else None


def is_oidc(sociallogin: SocialLogin) -> bool:
    return bool(sociallogin.account.get_provider().id == OIDC_PROVIDER)


def login_claims(sociallogin: SocialLogin) -> dict[str, Any]:
    """The ID token's claims with the userinfo answer's over them (a provider may put groups in either)."""
    data = sociallogin.account.extra_data or {}
    id_token = data.get("id_token") if isinstance(data.get("id_token"), Mapping) else {}
    userinfo = data.get("userinfo") if isinstance(data.get("userinfo"), Mapping) else {}
    return {**(id_token or {}), **(userinfo or {})}


class IdentityProviderAdapter(DefaultSocialAccountAdapter):
    """Sign-up only through the OpenID Connect provider; teams follow its claim at every sign-in."""

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        return is_oidc(sociallogin)

    def populate_user(self, request: HttpRequest, sociallogin: SocialLogin, data: dict[str, Any]) -> Any:
        user = super().populate_user(request, sociallogin, data)
        base = username_candidate(data.get("username"), data.get("email"))
        if base:
            taken = User.objects.filter(Q(username__iexact=base) | Q(username__istartswith=f"{base}-"))
            user.username = unique_username(base, taken.values_list("username", flat=True))
        return user

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        super().pre_social_login(request, sociallogin)
        if is_oidc(sociallogin) and sociallogin.is_existing:
            sync_memberships(sociallogin.user, login_claims(sociallogin))

    def save_user(self, request: HttpRequest, sociallogin: SocialLogin, form: Form | None = None) -> Any:
        user = super().save_user(request, sociallogin, form)
        if is_oidc(sociallogin):
            sync_memberships(user, login_claims(sociallogin))
        return user

    def on_authentication_error(
        self,
        request: HttpRequest,
        provider: Any,
        error: Any = None,
        exception: BaseException | None = None,
        extra_context: dict[str, Any] | None = None,
    ) -> None:
        # The page the user sees says only "login failure"; the operator needs the reason.
        logger.warning("sign-in through %s failed: %s %r", getattr(provider, "id", provider), error, exception)
        super().on_authentication_error(request, provider, error, exception, extra_context)

    def get_requests_session(self) -> requests.Session:
        session: requests.Session = super().get_requests_session()
        request = self.request
        if request is not None:
            session.hooks["response"].append(_id_token_keeper(request))
        return session


def _id_token_keeper(request: HttpRequest) -> Any:
    """A response hook that keeps the raw ID token of the token endpoint's answer on the request.

    allauth decodes the ID token and drops the signed original, which RP-initiated logout sends back
    as id_token_hint; the token request is the only place it passes through.
    """

    def keep(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if response.request.method != "POST" or "json" not in response.headers.get("Content-Type", ""):
            return
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, dict) and isinstance(body.get("id_token"), str) and "access_token" in body:
            setattr(request, ID_TOKEN_REQUEST_ATTR, body["id_token"])

    return keep
