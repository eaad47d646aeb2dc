"""Model pieces every app shares: owner scoping and timing. Apps own their models; this module
owns no table."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class OwnedQuerySet(models.QuerySet):
    """Rows a user may see: their own (plus `shared_rows()`, e.g. built-in datasets); staff see
    everything; anonymous users nothing."""

    owner_field = "owner"

    def shared_rows(self) -> Q | None:
        return None

    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        mine = Q(**{self.owner_field: user})
        shared = self.shared_rows()
        return self.filter(mine | shared if shared is not None else mine)


class TimedMixin:
    """`duration` of a record with `started_at` and `finished_at` (still running: until now)."""

    @property
    def duration(self):
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at
