"""Per-user bounds on tuning jobs (docs/configuration.md, Limits)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model

from tunix_rt.exceptions import LimitExceeded

from .models import TuningJob


def active_job_limit_check(*, owner_id: int) -> None:
    """LimitExceeded (429) when the owner already has MAX_ACTIVE_JOBS_PER_USER queued or running jobs.
    Call inside the transaction that queues the job: the owner's row lock serialises concurrent starts."""
    list(get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk", flat=True))
    cap = settings.TUNIX_RT["MAX_ACTIVE_JOBS_PER_USER"]
    if TuningJob.objects.filter(owner_id=owner_id, status__in=TuningJob.ACTIVE_STATUSES).count() >= cap:
        raise LimitExceeded(
            f"you already have {cap} active tuning jobs (queued or running), the most allowed; "
            "wait for one to finish or cancel one, then start this one"
        )
