"""allauth adapter: accounts are made by operators or an identity provider, never by self-signup."""

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter


class NoSignupAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: Any) -> bool:
        return False
