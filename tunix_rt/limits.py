"""Per-user caps on active work (docs/configuration.md, Limits)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from .exceptions import LimitExceeded


def active_limit_check(*, owner_id: int, active: QuerySet, cap: int, what: str, then: str = "") -> None:
    """LimitExceeded (429) when `active` (the owner's queued or running jobs or runs) already
    holds `cap` rows. Call inside the transaction that adds one: the owner's row lock serialises
    concurrent starts."""
    list(get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk", flat=True))
    if active.count() >= cap:
        raise LimitExceeded(
            f"you already have {cap} active {what} (queued or running), the most allowed; "
            f"wait for one to finish or cancel one{then}"
        )
