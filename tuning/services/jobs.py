"""Job services the web process calls: validate, create, start, cancel, clone. No Ray import."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs import services as run_services
from runs.models import Run
from tunix_rt.exceptions import InvalidTransition, ServiceUnavailable
from tunix_rt.limits import active_limit_check

from ..config import MAX_NAME_LENGTH, JobConfig
from ..models import Trial, TuningJob
from .trials import trials_end_unfinished, trials_reset_for_rerun

logger = logging.getLogger(__name__)


def tuning_job_create(*, owner, **data: Any) -> TuningJob:
    """Validate `data` (JobConfig's fields) and store a job in status `created`; nothing is
    stored on error."""
    config = JobConfig.validate(data, owner=owner)
    return TuningJob.objects.create(owner=owner, **config.as_fields())


def _check_can_run_experiments() -> None:
    if importlib.util.find_spec("ray") is None:
        raise ServiceUnavailable(
            "Ray Tune is not installed on this server (install requirements-tuning.txt); nothing was started."
        )
    from tunix_rt.celery import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=3)
    except Exception as exc:  # kombu raises several types; any means we cannot enqueue
        raise ServiceUnavailable(f"the task broker is unreachable ({exc}); nothing was started.") from None


def tuning_job_start(*, job: TuningJob) -> TuningJob:
    """Queue a created job: status `queued`, its experiment enqueued on the tuning queue after commit."""
    if not job.can_start:
        raise InvalidTransition(_not_startable(job.status))
    _check_can_run_experiments()
    with transaction.atomic():
        active_limit_check(
            owner_id=job.owner_id,
            active=TuningJob.objects.filter(owner_id=job.owner_id, status__in=TuningJob.ACTIVE_STATUSES),
            cap=settings.TUNIX_RT["MAX_ACTIVE_JOBS_PER_USER"],
            what="tuning jobs",
            then=", then start this one",
        )
        queued = TuningJob.objects.filter(pk=job.pk, status__in=TuningJob.STARTABLE_STATUSES).update(
            status=TuningJob.Status.QUEUED, queued_at=timezone.now()
        )
        if not queued:
            job.refresh_from_db(fields=["status"])
            raise InvalidTransition(_not_startable(job.status))
        transaction.on_commit(lambda: _enqueue_or_revert(job.pk, revert_to=TuningJob.Status.CREATED))
    job.refresh_from_db()
    return job


def _enqueue_or_revert(job_id: int, *, revert_to: str) -> None:
    """Publish the job's task; if the broker fails after the reachability check, put the job back
    where it was (still startable) and say so with a 503."""
    from ..tasks import run_tuning_job_task

    try:
        run_tuning_job_task.delay(job_id)  # Celery retries a failing publish 3 times within ~1 s
    except Exception as exc:  # kombu raises several types; any means nothing was enqueued
        TuningJob.objects.filter(pk=job_id, status=TuningJob.Status.QUEUED).update(status=revert_to, queued_at=None)
        raise ServiceUnavailable(f"the task broker failed while enqueueing ({exc}); nothing was started.") from None


def _enqueue_quietly(job_id: int) -> None:
    try:
        tuning_job_enqueue(job_id=job_id)
    except Exception:
        logger.warning("tuning job %s: could not publish its task; the reaper will re-send it", job_id, exc_info=True)


def tuning_job_enqueue(*, job_id: int) -> None:
    """(Re-)send a queued job's task; a duplicate message is harmless (the lease admits one)."""
    from ..tasks import run_tuning_job_task

    run_tuning_job_task.delay(job_id)


def tuning_job_resume(*, job: TuningJob) -> TuningJob:
    """Send a failed or cancelled job back to the queue: the worker continues its experiment from
    Ray's saved state, reruns its failed trials (their runs reset) and keeps every finished one."""
    if job.status not in TuningJob.RESUMABLE_STATUSES:
        raise InvalidTransition(f"the job is {job.status}; only a failed or cancelled job can be resumed")
    if not job.can_resume:
        raise InvalidTransition("the job never started an experiment; clone it to run it")
    _check_can_run_experiments()
    with transaction.atomic():
        queued = TuningJob.objects.filter(pk=job.pk, status__in=TuningJob.RESUMABLE_STATUSES).update(
            status=TuningJob.Status.QUEUED,
            queued_at=timezone.now(),
            cancel_requested=False,
            error_message="",
            finished_at=None,
            attempts=0,
        )
        if not queued:
            job.refresh_from_db(fields=["status"])
            raise InvalidTransition(f"the job is {job.status}; only a failed or cancelled job can be resumed")
        trials_reset_for_rerun(job_id=job.pk)
        # If this publish fails after the check, the job stays queued and the reaper re-sends it.
        transaction.on_commit(lambda: _enqueue_quietly(job.pk))
    job.refresh_from_db()
    return job


def _not_startable(status: str) -> str:
    return f"the job is {status}; only a created job can be started (clone it to run it again)"


def tuning_job_cancel(*, job: TuningJob, by=None) -> TuningJob:
    """Cancel a created or queued job at once; ask a running one to stop (it ends `cancelled`).
    `by` is the user who asked (shown on the trials it ends)."""
    now = timezone.now()
    cancelled_by_id = getattr(by, "pk", None)
    with transaction.atomic():
        done = TuningJob.objects.filter(
            pk=job.pk, status__in=[TuningJob.Status.CREATED, TuningJob.Status.QUEUED]
        ).update(
            status=TuningJob.Status.CANCELLED,
            cancel_requested=True,
            cancelled_by_id=cancelled_by_id,
            finished_at=now,
            error_message="Cancelled before it started.",
        )
        if done:
            # A job requeued after a lost or stopped worker already has trials: end the unfinished.
            trials_end_unfinished(job_id=job.pk, reason=Trial.EndReason.CANCELLED)
        else:
            done = TuningJob.objects.filter(pk=job.pk, status=TuningJob.Status.RUNNING).update(
                cancel_requested=True, cancelled_by_id=cancelled_by_id
            )
            run_services.runs_cancel_request(runs=Run.objects.filter(trial__job_id=job.pk))
    job.refresh_from_db()
    if not done:
        raise InvalidTransition(f"the job is already {job.status} and cannot be cancelled")
    return job


def tuning_job_clone(*, job: TuningJob, owner) -> TuningJob:
    """A new `created` job with the same configuration, named "<name> (copy)"."""
    suffix = " (copy)"
    config = JobConfig.from_job(job)
    name = job.name[: MAX_NAME_LENGTH - len(suffix)] + suffix
    return tuning_job_create(owner=owner, **config.replace(name=name).as_fields())


def tuning_job_rename(*, job: TuningJob, name: str) -> TuningJob:
    """Change a job's name, the one part of its configuration that may change after creation."""
    name = JobConfig.field_validate("name", name).strip()
    TuningJob.objects.filter(pk=job.pk).update(name=name)
    job.refresh_from_db(fields=["name"])
    return job
