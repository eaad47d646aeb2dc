"""Experiment services the tuning worker (callbacks, runner) and Ray trials call, with ids only.
Every write is idempotent or guarded by the current state, so replays change nothing."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from runs import services as run_services
from runs.models import Run

from ..models import Trial, TuningJob
from .jobs import MAX_NAME_LENGTH

logger = logging.getLogger(__name__)

ERROR_MESSAGE_CHARS = 10_000
# How the reaper's failure message starts when it gives a job up (see trials_reset_for_rerun).
WORKER_LOST = "Worker lost"


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


def trials_reset_for_rerun(*, job_id: int) -> int:
    """Failed (and worker-lost) trials of a job back to `pending` with their runs `queued`, so a
    resumed experiment (which restarts errored and unfinished trials) executes them again."""
    # Also the trials that were running when the reaper gave the job up: Ray's state still has
    # them unfinished, so the restored experiment runs them again.
    rerun = Q(status=Trial.Status.FAILED) | Q(
        status=Trial.Status.CANCELLED, error_message__startswith=f"Experiment ended: {WORKER_LOST}"
    )
    failed = list(Trial.objects.filter(rerun, job_id=job_id).values_list("pk", "run_id"))
    for _pk, run_id in failed:
        if run_id:
            run_services.run_reset(run_id=run_id)
    Trial.objects.filter(pk__in=[pk for pk, _ in failed]).update(
        status=Trial.Status.PENDING, error_message="", finished_at=None, started_at=None
    )
    return len(failed)


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


def _trial_number(ray_trial_id: str) -> int | None:
    # Tune names trials "<experiment>_<index:05d>" in creation order: a stable, race-free number.
    suffix = ray_trial_id.rsplit("_", 1)[-1]
    return int(suffix) + 1 if suffix.isdigit() else None


def trial_register(*, job_id: int, ray_trial_id: str, hyperparameters: dict[str, Any]) -> Trial:
    """The trial row for a Ray trial, created `pending` the first time Ray mentions it."""
    try:
        trial, _ = Trial.objects.get_or_create(
            job_id=job_id,
            ray_trial_id=ray_trial_id,
            defaults={"hyperparameters": hyperparameters, "number": _next_number(job_id, ray_trial_id)},
        )
    except IntegrityError:  # the trial process and the driver registered it at the same moment
        trial = Trial.objects.get(job_id=job_id, ray_trial_id=ray_trial_id)
    return trial


def _next_number(job_id: int, ray_trial_id: str) -> int:
    number = _trial_number(ray_trial_id)
    if number is None:
        number = Trial.objects.filter(job_id=job_id).count() + 1
    return number


def trial_start(*, job_id: int, ray_trial_id: str, hyperparameters: dict[str, Any]) -> None:
    """Ray placed the trial: it is running."""
    trial = trial_register(job_id=job_id, ray_trial_id=ray_trial_id, hyperparameters=hyperparameters)
    Trial.objects.filter(pk=trial.pk, status=Trial.Status.PENDING).update(
        status=Trial.Status.RUNNING, started_at=timezone.now()
    )


def trial_run_claim(*, job_id: int, ray_trial_id: str, sampled: dict[str, Any]) -> int:
    """Inside a trial: the id of the trial's queued run (created on first call, with the job's
    owner, trainer and fixed + sampled hyperparameters)."""
    job = TuningJob.objects.get(pk=job_id)
    with transaction.atomic():
        trial = trial_register(job_id=job_id, ray_trial_id=ray_trial_id, hyperparameters=sampled)
        trial = Trial.objects.select_for_update().get(pk=trial.pk)
        if trial.run_id is not None:
            # Ray runs this trial again (a retry after a failure, or a resumed experiment): its
            # run executes again from the start unless it already succeeded or the job is cancelled.
            if not trial.is_terminal and not job.cancel_requested:
                run_services.run_reset(run_id=trial.run_id)
            return trial.run_id
        run = run_services.run_create(
            owner=job.owner,
            trainer=job.trainer,
            dataset=job.dataset,
            hyperparameters={**job.fixed_hyperparameters, **sampled},
            name=f"{job.name} · trial {trial.number}"[:MAX_NAME_LENGTH],
            enqueue=False,
        )
        trial.run = run
        trial.hyperparameters = sampled
        trial.save(update_fields=["run", "hyperparameters"])
        if job.cancel_requested:
            Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    return run.pk


def trial_result_record(
    *, job_id: int, ray_trial_id: str, iteration: int, value: float | None, best: float | None, mode: str
) -> None:
    """Progress of a running trial: iterations done, latest and best value of the job's metric.
    Idempotent on (trial, iteration): a replayed result changes nothing."""
    updates: dict[str, Any] = {"iterations": iteration}
    if value is not None and math.isfinite(value):
        updates["latest_metric_value"] = value
    if best is not None and math.isfinite(best):
        updates["best_metric_value"] = best
    Trial.objects.filter(job_id=job_id, ray_trial_id=ray_trial_id, iterations__lte=iteration).exclude(
        status__in=Trial.TERMINAL_STATUSES
    ).update(**updates)


def trial_complete(*, job_id: int, ray_trial_id: str, stopped_by: str) -> Trial:
    """Ray ended the trial without an error: succeeded if its run succeeded; otherwise it was
    stopped (by the scheduler, the time budget or a cancel) and its run ends with that reason."""
    trial = Trial.objects.select_related("job").get(job_id=job_id, ray_trial_id=ray_trial_id)
    if trial.is_terminal:
        return trial
    run = Run.objects.filter(pk=trial.run_id).only("status", "error_message").first()
    now = timezone.now()
    if run is not None and run.status == Run.Status.SUCCEEDED:
        status, message = Trial.Status.SUCCEEDED, ""
    elif run is not None and run.status == Run.Status.FAILED:
        status, message = Trial.Status.FAILED, run.error_message
    elif trial.job.cancel_requested:
        status, message = Trial.Status.CANCELLED, "Cancelled with the job."
    elif run is None:
        status, message = Trial.Status.CANCELLED, "Not started before the experiment ended."
    else:
        status = Trial.Status.STOPPED
        message = f"Stopped early by {stopped_by} after {trial.iterations} iteration(s); not evaluated."
    with transaction.atomic():
        Trial.objects.filter(pk=trial.pk).update(status=status, error_message=message, finished_at=now)
        if status in (Trial.Status.STOPPED, Trial.Status.CANCELLED) and trial.run_id:
            _run_stop(trial.run_id, message)
    tuning_job_best_update(job_id=job_id)
    trial.refresh_from_db()
    return trial


def _run_stop(run_id: int, message: str) -> None:
    # The trial process may already have ended the run with a generic "cancelled on request":
    # overwrite the message with the reason the driver knows. A finished run keeps its result.
    Run.objects.filter(pk=run_id).filter(Q(status__in=Run.ACTIVE_STATUSES) | Q(status=Run.Status.CANCELLED)).update(
        status=Run.Status.CANCELLED, error_message=message, cancel_requested=True, finished_at=timezone.now()
    )


def trial_fail(*, job_id: int, ray_trial_id: str, error: str) -> None:
    """Ray reported the trial errored: record the run's own error when it has one."""
    trial = Trial.objects.filter(job_id=job_id, ray_trial_id=ray_trial_id).first()
    if trial is None or trial.is_terminal:
        return
    run = Run.objects.filter(pk=trial.run_id).only("status", "error_message").first()
    message = run.error_message if run is not None and run.error_message else error
    Trial.objects.filter(pk=trial.pk).update(
        status=Trial.Status.FAILED, error_message=message[:ERROR_MESSAGE_CHARS], finished_at=timezone.now()
    )
    if run is not None:
        run_services.run_end(run_id=run.pk, status=Run.Status.FAILED, message=message)


def tuning_job_best_update(*, job_id: int) -> None:
    """Link the job's best succeeded trial so far (never a failed one; always the job's own)."""
    mode = TuningJob.objects.values_list("mode", flat=True).get(pk=job_id)
    best = Trial.objects.filter(job_id=job_id, run__isnull=False).best(mode).first()
    if best is None:
        return
    TuningJob.objects.filter(pk=job_id).update(
        best_run_id=best.run_id,
        best_hyperparameters=best.hyperparameters,
        best_metric_value=best.best_metric_value,
        heartbeat_at=timezone.now(),
    )


def tuning_job_finalize(*, job_id: int, stop_reason: str = "", error: str = "") -> TuningJob:
    """After `fit()` returned (or raised): reconcile trials and runs Ray never finished, link the
    best run and end the job. A normal return is not success by itself (SIGINT returns too)."""
    job = TuningJob.objects.get(pk=job_id)
    now = timezone.now()
    if job.cancel_requested:
        leftover_status, leftover_message = Trial.Status.CANCELLED, "Cancelled with the job."
    elif error or stop_reason:
        leftover_status, leftover_message = Trial.Status.CANCELLED, f"Experiment ended: {error or stop_reason}"
    elif job.time_budget_s:
        leftover_status, leftover_message = Trial.Status.CANCELLED, "Not finished within the job's time budget."
    else:
        leftover_status, leftover_message = Trial.Status.CANCELLED, "Experiment was interrupted."
    leftovers = list(Trial.objects.filter(job_id=job_id).exclude(status__in=Trial.TERMINAL_STATUSES))
    with transaction.atomic():
        for trial in leftovers:
            if trial.run_id:
                run = Run.objects.only("status").get(pk=trial.run_id)
                if run.status == Run.Status.SUCCEEDED:  # finished after Ray stopped listening
                    Trial.objects.filter(pk=trial.pk).update(status=Trial.Status.SUCCEEDED, finished_at=now)
                    continue
                _run_stop(trial.run_id, leftover_message)
            Trial.objects.filter(pk=trial.pk).update(
                status=leftover_status, error_message=leftover_message, finished_at=now
            )
    tuning_job_best_update(job_id=job_id)
    job.refresh_from_db()
    counts = {s: 0 for s in Trial.Status.values}
    for status in Trial.objects.filter(job_id=job_id).values_list("status", flat=True):
        counts[status] += 1
    total = sum(counts.values())
    if job.cancel_requested:
        status, message = TuningJob.Status.CANCELLED, "Cancelled on request."
    elif error:
        status, message = TuningJob.Status.FAILED, error
    elif stop_reason:
        status, message = TuningJob.Status.FAILED, f"Stopped: {stop_reason}."
    elif counts[Trial.Status.SUCCEEDED] == 0:
        status = TuningJob.Status.FAILED
        first_error = (
            Trial.objects.filter(job_id=job_id, status=Trial.Status.FAILED)
            .exclude(error_message="")
            .values_list("error_message", flat=True)
            .first()
        )
        if not total:
            message = "The experiment ended without running any trial."
        elif counts[Trial.Status.FAILED] == total:
            message = f"All {total} trials failed"
        else:
            ended = ", ".join(f"{counts[s]} {s}" for s in Trial.Status.values if counts[s])
            message = f"No trial succeeded ({ended})"
            if job.time_budget_s:
                message += f" within the time budget of {job.time_budget_s} s"
        if first_error:
            message += f"; first error: {first_error}"
    elif not job.time_budget_s and leftovers and leftover_message == "Experiment was interrupted.":
        status, message = TuningJob.Status.FAILED, "The experiment was interrupted before every trial finished."
    else:
        status, message = TuningJob.Status.SUCCEEDED, ""
    TuningJob.objects.filter(pk=job_id, status=TuningJob.Status.RUNNING).update(
        status=status,
        error_message=message[:ERROR_MESSAGE_CHARS],
        finished_at=now,
        lease_expires_at=None,
        lease_owner="",
    )
    job.refresh_from_db()
    return job


def tuning_storage_path() -> str:
    """Where Ray keeps experiment state: absolute, because trials change directory."""
    path = (settings.DATA_DIR / "ray_results").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
