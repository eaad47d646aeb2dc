"""The reaper: nothing stays `running` forever and no queued job waits on a lost message.

The beat task calls `stale_work_reap` every REAPER_INTERVAL_S. Every write is conditional on the
state the reaper saw, so a driver that renews its lease meanwhile keeps its job.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from runs import services as run_services
from runs.models import Run

from ..models import TuningJob
from .experiment import (
    WORKER_LOST,
    lease_holder_is_dead_here,
    lease_host,
    tuning_job_finalize,
    tuning_job_requeue,
)
from .jobs import tuning_job_enqueue

REAPER_LEASE_OWNER = "reaper"


def stale_work_reap(*, now: datetime | None = None) -> dict[str, int]:
    """Resume (or, past MAX_JOB_ATTEMPTS, fail) running jobs whose lease expired or whose driver
    was a process of this host that is gone; fail runs whose
    worker stopped sending heartbeats; re-send jobs queued for QUEUED_RESEND_AFTER_S."""
    now = now or timezone.now()
    conf = settings.TUNIX_RT
    stale_before = now - timedelta(seconds=conf["STALE_AFTER_S"])
    counts = {"jobs_requeued": 0, "jobs_failed": 0, "jobs_resent": 0, "runs_failed": 0}

    tuning_jobs_reclaim_from_dead_local_workers(counts=counts)
    lost = TuningJob.objects.filter(status=TuningJob.Status.RUNNING).filter(
        Q(lease_expires_at__lt=now)
        | Q(lease_expires_at__isnull=True) & Q(heartbeat_at__lt=stale_before)
        | Q(lease_expires_at__isnull=True, heartbeat_at__isnull=True, started_at__lt=stale_before)
    )
    for job in lost.only("pk", "lease_owner", "lease_expires_at", "heartbeat_at", "attempts"):
        last = f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if job.heartbeat_at else "never"
        reason = f"the worker driving it ({job.lease_owner or 'unknown'}) stopped sending heartbeats (last: {last})"
        _job_lost(job, reason=reason, expired_before=now, counts=counts)

    resend_before = now - timedelta(seconds=conf["QUEUED_RESEND_AFTER_S"])
    for job_id in TuningJob.objects.filter(status=TuningJob.Status.QUEUED, queued_at__lt=resend_before).values_list(
        "pk", flat=True
    ):
        if TuningJob.objects.filter(pk=job_id, status=TuningJob.Status.QUEUED, queued_at__lt=resend_before).update(
            queued_at=now
        ):
            tuning_job_enqueue(job_id=job_id)
            counts["jobs_resent"] += 1

    # Stand-alone runs whose worker died, and trial runs left active by a job that already ended
    # (a running job's trial runs are reset and re-executed when the job resumes).
    silent = Run.objects.filter(status=Run.Status.RUNNING).alias(last=Coalesce("heartbeat_at", "started_at"))
    orphans = silent.filter(last__lt=stale_before).filter(
        Q(trial__isnull=True) | Q(trial__job__status__in=TuningJob.TERMINAL_STATUSES)
    )
    for run in orphans.only("pk", "heartbeat_at"):
        last = f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if run.heartbeat_at else "never"
        if run_services.run_end(
            run_id=run.pk,
            status=Run.Status.FAILED,
            message=f"The worker executing this run was lost: no heartbeat for {conf['STALE_AFTER_S']} s"
            f" (last: {last}).",
        ):
            counts["runs_failed"] += 1
    return counts


def tuning_jobs_reclaim_from_dead_local_workers(*, counts: dict[str, int] | None = None) -> list[int]:
    """Take back at once the running jobs whose lease holder was a process on this host that no
    longer exists (a worker killed, then restarted): no wait for the lease to expire. Leases held
    from other hosts, or by a live process, are left alone. Returns the ids requeued or failed."""
    counts = counts if counts is not None else dict.fromkeys(("jobs_requeued", "jobs_failed"), 0)
    taken: list[int] = []
    running = TuningJob.objects.filter(status=TuningJob.Status.RUNNING, lease_owner__startswith=f"{lease_host()}:")
    for job in running.only("pk", "lease_owner", "lease_expires_at", "heartbeat_at", "attempts"):
        if not lease_holder_is_dead_here(job.lease_owner):
            continue
        reason = f"the worker driving it ({job.lease_owner}) no longer exists on this host"
        if _job_lost(job, reason=reason, expired_before=None, counts=counts):
            taken.append(job.pk)
    return taken


def _job_lost(job: TuningJob, *, reason: str, expired_before: datetime | None, counts: dict[str, int]) -> bool:
    """Requeue a job whose driver is gone, or past MAX_JOB_ATTEMPTS fail it; conditional on the
    lease the caller saw, so a driver that renewed it meanwhile keeps its job."""
    if job.attempts >= settings.TUNIX_RT["MAX_JOB_ATTEMPTS"]:
        # Take the lease first, so a driver that comes back cannot write any more.
        taken = TuningJob.objects.filter(
            pk=job.pk,
            status=TuningJob.Status.RUNNING,
            lease_owner=job.lease_owner,
            lease_expires_at=job.lease_expires_at,
        ).update(lease_owner=REAPER_LEASE_OWNER)
        if taken:
            tuning_job_finalize(
                job_id=job.pk,
                worker_lost=True,
                error=f"{WORKER_LOST} {job.attempts} time(s), the limit (MAX_JOB_ATTEMPTS); last: {reason}.",
            )
            counts["jobs_failed"] += 1
        return bool(taken)
    with transaction.atomic():
        requeued = tuning_job_requeue(
            job_id=job.pk, lease_owner=job.lease_owner, reason=reason, expired_before=expired_before
        )
        if requeued:
            transaction.on_commit(lambda job_id=job.pk: tuning_job_enqueue(job_id=job_id))
            counts["jobs_requeued"] += 1
    return requeued
