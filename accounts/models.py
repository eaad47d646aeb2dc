"""API tokens: several named ones per user, stored as a hash, with last use and expiry."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiTokenQuerySet(models.QuerySet):
    def for_user(self, user) -> ApiTokenQuerySet:
        return self.filter(user=user)

    def expired(self, now=None) -> ApiTokenQuerySet:
        return self.filter(expires_at__lte=now or timezone.now())


class ApiToken(models.Model):
    """One secret a script sends as `Authorization: Token <key>`. Only the key's sha256 is stored:
    the key itself is shown once, when the token is created. Revoking a token deletes it."""

    NAME_MAX_LENGTH = 100
    PREFIX_LENGTH = 8

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The key's first characters: enough to recognise a token in a list or a log, far too few to use it.
    prefix = models.CharField(max_length=PREFIX_LENGTH, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "API token"
        ordering = ("-created_at", "-pk")
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
