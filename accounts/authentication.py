"""DRF authentication by `Authorization: Token <key>` against ApiToken (the key's hash)."""

from __future__ import annotations

from rest_framework import authentication, exceptions

from . import services
from .models import ApiToken


class TokenRefused(exceptions.APIException):
    """401 with `WWW-Authenticate: Token` for a token that was sent but is unknown, revoked or expired.

    Not an AuthenticationFailed: DRF would turn that into a 403, because session authentication comes
    first in DEFAULT_AUTHENTICATION_CLASSES (so that a caller sending nothing gets 403, docs/security.md).
    """

    status_code = 401
    default_detail = "Invalid token."
    default_code = "authentication_failed"
    auth_header = "Token"


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """DRF's token header and 401 answer; the key is looked up by its sha256, and an expired token is
    refused like a revoked one."""

    model = ApiToken

    def authenticate_credentials(self, key: str):
        try:
            token = ApiToken.objects.select_related("user").get(key_hash=ApiToken.hash_key(key))
        except ApiToken.DoesNotExist:
            raise TokenRefused("Invalid token: unknown or revoked.") from None
        if token.is_expired:
            raise TokenRefused("Token expired: create a new one on /accounts/tokens/.")
        if not token.user.is_active:
            raise TokenRefused("User inactive or deleted.")
        services.token_use_record(token=token)
        return token.user, token
