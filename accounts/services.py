"""API token transitions: create (the key is returned once), revoke, record a use."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tunix_rt.exceptions import ValidationError

from .models import ApiToken

log = logging.getLogger(__name__)

MAX_EXPIRY_DAYS = 3650
# last_used_at is written at most this often per token, so an API call does not write each time.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# The name POST /api/auth/token/ gives the tokens it creates (scripts that sign in with a password).
PASSWORD_TOKEN_NAME = "api-token"


def default_expiry_days() -> int | None:
    """Days a new token lives unless its creator chooses; None: never expires."""
    return settings.TUNIX_RT["TOKEN_EXPIRY_DAYS"] or None


def token_create(*, user, name: str, expires_in_days: int | None) -> tuple[ApiToken, str]:
    """Create a named token for `user`; return it and its key, which is not stored and never shown again."""
    name = name.strip()
    if not name:
        raise ValidationError("a token needs a name", field="name")
    if len(name) > ApiToken.NAME_MAX_LENGTH:
        raise ValidationError(f"at most {ApiToken.NAME_MAX_LENGTH} characters", field="name")
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise ValidationError(
            f"must be between 1 and {MAX_EXPIRY_DAYS} days, or null for never", field="expires_in_days"
        )
    limit = settings.TUNIX_RT["MAX_TOKENS_PER_USER"]
    now = timezone.now()
    with transaction.atomic():
        # The user's row serialises concurrent creations, so two requests cannot both take the last place.
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        # Expired tokens can never be used again: they give their place up.
        ApiToken.objects.for_user(user).expired(now).delete()
        if ApiToken.objects.for_user(user).count() >= limit:
            raise ValidationError(
                f"you have {limit} tokens, the most one user may have: revoke one first", field="name"
            )
        key = secrets.token_hex(20)
        token = ApiToken.objects.create(
            user=user,
            name=name,
            key_hash=ApiToken.hash_key(key),
            prefix=key[: ApiToken.PREFIX_LENGTH],
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        )
    log.info("API token %s created for %s", token.prefix, user)
    return token, key


def token_revoke(*, token: ApiToken) -> None:
    """Revoke a token: it is deleted, so the next request that sends it is refused (401)."""
    log.info("API token %s of %s revoked", token.prefix, token.user_id)
    token.delete()


def token_use_record(*, token: ApiToken) -> None:
    """Note that `token` authenticated a request, writing at most once per LAST_USED_RESOLUTION."""
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
        return
    # The condition in SQL too: concurrent requests with the same token write once.
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
