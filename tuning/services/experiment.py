"""Job-level services of a running experiment: the lease (begin, heartbeat, requeue), whether to
stop, and the job's end. The tuning worker calls them with ids only; every write is guarded by the
current state, so replays change nothing. Trial writes live in `trials`."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

import psutil
from django.conf import settings
from django.db.models import Count, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from registry.services import model_version_promote_by_policy

from ..models import Trial, TuningJob
from .trials import (
    ERROR_MESSAGE_CHARS,
    EndReason,
    trials_end_unfinished,
    trials_stopped_runs_close,
    tuning_job_best_update,
)

logger = logging.getLogger(__name__)

# How the reaper's failure message starts when it gives a job up.
WORKER_LOST = "Worker lost"


def lease_host() -> str:
    """This host's name as lease owners carry it."""
    return socket.gethostname()


def lease_owner_new() -> str:
    """A lease owner for a driver in this process: "<host>:<pid>:<random>", so a worker starting
    on the same host can tell that the holder is gone (tuning_jobs_reclaim_from_dead_local_workers)."""
    return f"{lease_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_holder_is_dead_here(lease_owner: str) -> bool:
    """True if `lease_owner` names a process of this host that no longer exists (or is a zombie).
    A reused pid reads as alive: the lease then waits for its expiry, the safe direction."""
    host, _, rest = lease_owner.partition(":")
    pid = rest.partition(":")[0]
    if host != lease_host() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # exists, but not ours to inspect
        return False


def _lease_until():
    return timezone.now() + timedelta(seconds=settings.TUNIX_RT["STALE_AFTER_S"])


def tuning_job_begin(*, job_id: int, lease_owner: str, experiment_path: str) -> bool:
    """Claim a queued job for this worker with a lease. False if it is not queued (cancelled, or
    claimed by another delivery of the same task): one experiment per job."""
    now = timezone.now()
    return bool(
        TuningJob.objects.filter(pk=job_id, status=TuningJob.Status.QUEUED).update(
            status=TuningJob.Status.RUNNING,
            started_at=Coalesce(F("started_at"), Value(now)),
            heartbeat_at=now,
            lease_owner=lease_owner[:200],
            lease_expires_at=_lease_until(),
            attempts=F("attempts") + 1,
            experiment_path=experiment_path[:500],
        )
    )


def tuning_job_heartbeat(*, job_id: int, lease_owner: str) -> bool:
    """Renew this worker's lease on a running job. False if the lease is no longer ours."""
    return bool(
        TuningJob.objects.filter(pk=job_id, status=TuningJob.Status.RUNNING, lease_owner=lease_owner).update(
            heartbeat_at=timezone.now(), lease_expires_at=_lease_until()
        )
    )


def tuning_job_requeue(*, job_id: int, lease_owner: str, reason: str, expired_before: datetime | None = None) -> bool:
    """Give a running job back to the queue (worker shutting down, or its worker was lost); the
    next worker resumes its experiment. Only the lease holder (or the reaper, passing the expired
    holder) can; False otherwise."""
    jobs = TuningJob.objects.filter(pk=job_id, status=TuningJob.Status.RUNNING, lease_owner=lease_owner)
    if expired_before is not None:
        jobs = jobs.filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=expired_before))
    requeued = jobs.update(
        status=TuningJob.Status.QUEUED,
        queued_at=timezone.now(),
        lease_owner="",
        lease_expires_at=None,
        error_message=f"Requeued: {reason}"[:ERROR_MESSAGE_CHARS],
    )
    if requeued:
        logger.warning("tuning job %s requeued: %s", job_id, reason)
    return bool(requeued)


def tuning_job_should_stop(*, job_id: int) -> str:
    """Why the experiment must stop now ("" to go on): a cancel, or too many failed trials."""
    job = TuningJob.objects.only("cancel_requested", "max_failed_trials").get(pk=job_id)
    if job.cancel_requested:
        return "cancelled"
    if job.max_failed_trials is not None:
        failed = Trial.objects.filter(job_id=job_id, status=Trial.Status.FAILED).count()
        if failed > job.max_failed_trials:
            return f"{failed} trials failed, more than max_failed_trials={job.max_failed_trials}"
    return ""


def tuning_job_finalize(*, job_id: int, stop_reason: str = "", error: str = "", worker_lost: bool = False) -> TuningJob:
    """After `fit()` returned (or raised, or its worker was lost for good): end the trials Ray
    never finished, link the best run and end the job. A normal return is not success by itself
    (SIGINT returns too)."""
    job = TuningJob.objects.get(pk=job_id)
    if job.cancel_requested:
        reason, message = EndReason.CANCELLED, ""
    elif worker_lost:
        reason, message = EndReason.INTERRUPTED, f"Experiment ended: {error}"
    elif error or stop_reason:
        reason, message = EndReason.EXPERIMENT_STOPPED, f"Experiment ended: {error or stop_reason}"
    elif job.time_budget_s:
        reason, message = EndReason.TIME_BUDGET, ""
    else:
        reason, message = EndReason.INTERRUPTED, ""
    unfinished = trials_end_unfinished(job_id=job_id, reason=reason, message=message)
    trials_stopped_runs_close(job_id=job_id)
    tuning_job_best_update(job_id=job_id)
    job.refresh_from_db()
    status, message = _job_outcome(job, reason=reason, unfinished=unfinished, stop_reason=stop_reason, error=error)
    TuningJob.objects.filter(pk=job_id, status=TuningJob.Status.RUNNING).update(
        status=status,
        error_message=message[:ERROR_MESSAGE_CHARS],
        finished_at=timezone.now(),
        lease_expires_at=None,
        lease_owner="",
    )
    job.refresh_from_db()
    if job.status == TuningJob.Status.SUCCEEDED and job.promote_to:
        _promote_by_policy(job)
    return job


def _promote_by_policy(job: TuningJob) -> None:
    """The job's `promote_to`, through the registry; a registry failure never fails the job: it is
    written to the job's promotion note instead."""
    try:
        note = model_version_promote_by_policy(job=job)
    except Exception as exc:  # any failure of the registry (storage, bounds) ends up in the note
        logger.warning("tuning job %s: promotion failed", job.pk, exc_info=True)
        note = f"Promotion failed: {getattr(exc, 'message', None) or exc}"
    TuningJob.objects.filter(pk=job.pk).update(promotion_note=note[:ERROR_MESSAGE_CHARS])
    job.promotion_note = note[:ERROR_MESSAGE_CHARS]


def _job_outcome(job: TuningJob, *, reason: str, unfinished: int, stop_reason: str, error: str) -> tuple[str, str]:
    """The job's final status and message, from how its experiment ended and its trials' counts."""
    if job.cancel_requested:
        return TuningJob.Status.CANCELLED, "Cancelled on request."
    if error:
        return TuningJob.Status.FAILED, error
    if stop_reason:
        return TuningJob.Status.FAILED, f"Stopped: {stop_reason}."
    counts = dict.fromkeys(Trial.Status.values, 0)
    counts.update(Trial.objects.filter(job=job).values_list("status").annotate(n=Count("id")).order_by())
    if counts[Trial.Status.SUCCEEDED]:
        if reason == EndReason.INTERRUPTED and unfinished:
            return TuningJob.Status.FAILED, "The experiment was interrupted before every trial finished."
        return TuningJob.Status.SUCCEEDED, ""
    total = sum(counts.values())
    if not total:
        message = "The experiment ended without running any trial."
    elif counts[Trial.Status.FAILED] == total:
        message = f"All {total} trials failed"
    else:
        ended = ", ".join(f"{counts[s]} {s}" for s in Trial.Status.values if counts[s])
        message = f"No trial succeeded ({ended})"
        if job.time_budget_s:
            message += f" within the time budget of {job.time_budget_s} s"
    first_error = (
        Trial.objects.filter(job=job, status=Trial.Status.FAILED)
        .exclude(error_message="")
        .values_list("error_message", flat=True)
        .first()
    )
    if first_error:
        message += f"; first error: {first_error}"
    return TuningJob.Status.FAILED, message


def tuning_storage_path() -> str:
    """Where Ray keeps experiment state: absolute, because trials change directory."""
    path = (settings.DATA_DIR / "ray_results").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
