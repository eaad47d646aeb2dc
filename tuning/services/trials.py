"""Trial services the tuning worker (callbacks, runner) and Ray trials call, with ids only.

Every write is idempotent or guarded by the current state, so replays change nothing. A trial's
run changes only through `runs.services`.
"""

from __future__ import annotations

import math
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, Value
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from runs import selectors as run_selectors
from runs import services as run_services
from runs.models import Run

from ..config import MAX_NAME_LENGTH
from ..models import Trial, TuningJob

ERROR_MESSAGE_CHARS = 10_000
EndReason = Trial.EndReason

# What a trial ended by the experiment (not by its own run) says, per reason.
END_MESSAGES = {
    EndReason.CANCELLED: "Cancelled with the job.",
    EndReason.TIME_BUDGET: "Not finished within the job's time budget.",
    EndReason.INTERRUPTED: "Experiment was interrupted.",
    EndReason.EXPERIMENT_STOPPED: "Experiment ended.",
}


def _trial_number(job_id: int, ray_trial_id: str) -> int:
    # Tune's own variant generator names trials "<experiment>_<index:05d>" in creation order: a
    # stable, race-free number. Searchers (Optuna) use bare 8-hex-digit ids, which may be all
    # digits: those trials are numbered in the order they are registered.
    _, sep, suffix = ray_trial_id.rpartition("_")
    if sep and suffix.isdigit():
        return int(suffix) + 1
    return (Trial.objects.filter(job_id=job_id).aggregate(n=Max("number"))["n"] or 0) + 1


def trial_register(*, job_id: int, ray_trial_id: str, hyperparameters: dict[str, Any]) -> Trial:
    """The trial row for a Ray trial, created `pending` the first time Ray mentions it."""
    try:
        with transaction.atomic():
            trial, _ = Trial.objects.get_or_create(
                job_id=job_id,
                ray_trial_id=ray_trial_id,
                defaults={"hyperparameters": hyperparameters, "number": _trial_number(job_id, ray_trial_id)},
            )
    except IntegrityError:  # the trial process and the driver registered it at the same moment
        trial = Trial.objects.get(job_id=job_id, ray_trial_id=ray_trial_id)
    return trial


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
            run_services.runs_cancel_request(runs=Run.objects.filter(pk=run.pk))
    return run.pk


def trial_node_record(*, job_id: int, ray_trial_id: str, node: str) -> None:
    """Inside a trial: the Ray node running it (the latest one, when a retry moved it)."""
    Trial.objects.filter(job_id=job_id, ray_trial_id=ray_trial_id).exclude(node=node).update(node=node[:64])


def _best_of(mode: str, value: float):
    """SQL for the trial's best value after seeing `value`, in the job's direction."""
    best = Coalesce(F("best_metric_value"), Value(value))
    return Greatest(best, Value(value)) if mode == TuningJob.Mode.MAX else Least(best, Value(value))


def trial_result_record(*, job_id: int, ray_trial_id: str, iteration: int, value: float | None, mode: str) -> None:
    """Progress of a running trial: iterations done, latest and best value of the job's metric
    (the best computed here, in SQL, in the job's direction). Idempotent on (trial, iteration):
    a replayed result changes nothing."""
    updates: dict[str, Any] = {"iterations": iteration}
    if value is not None and math.isfinite(value):
        updates["latest_metric_value"] = value
        updates["best_metric_value"] = _best_of(mode, value)
    Trial.objects.filter(job_id=job_id, ray_trial_id=ray_trial_id, iterations__lte=iteration).exclude(
        status__in=Trial.TERMINAL_STATUSES
    ).update(**updates)


def _trial_end(trial: Trial, *, status: str, reason: str, message: str = "") -> None:
    """A trial's terminal write. Its best value is settled from every step its run stored (the
    driver sees results throttled)."""
    job = trial.job
    best = (
        run_selectors.run_metric_best(run_id=trial.run_id, metric=job.metric, mode=job.mode) if trial.run_id else None
    )
    Trial.objects.filter(pk=trial.pk).update(
        status=status,
        end_reason=reason,
        error_message=message[:ERROR_MESSAGE_CHARS],
        finished_at=timezone.now(),
        best_metric_value=best if best is not None else F("best_metric_value"),
    )


def trial_complete(*, job_id: int, ray_trial_id: str, stopped_by: str) -> Trial:
    """Ray ended the trial without an error: succeeded if its run succeeded; otherwise it was
    stopped (by the scheduler, the time budget or a cancel) and its run ends with that reason."""
    trial = Trial.objects.select_related("job").get(job_id=job_id, ray_trial_id=ray_trial_id)
    if trial.is_terminal:
        return trial
    run = Run.objects.filter(pk=trial.run_id).only("status", "error_message").first()
    job = trial.job
    if run is not None and run.status == Run.Status.SUCCEEDED:
        status, reason, message = Trial.Status.SUCCEEDED, EndReason.FINISHED, ""
    elif run is not None and run.status == Run.Status.FAILED:
        status, reason, message = Trial.Status.FAILED, EndReason.FAILED, run.error_message
    elif job.cancel_requested:
        status, reason, message = Trial.Status.CANCELLED, EndReason.CANCELLED, END_MESSAGES[EndReason.CANCELLED]
    elif run is None:
        status, reason = Trial.Status.CANCELLED, EndReason.EXPERIMENT_STOPPED
        message = "Not started before the experiment ended."
    else:
        status = Trial.Status.STOPPED
        # FIFO stops no trial: the experiment itself ended it (time budget, failure cap).
        if job.scheduler != TuningJob.Scheduler.FIFO:
            reason = EndReason.STOPPED_EARLY
        elif job.time_budget_s:
            reason = EndReason.TIME_BUDGET
        else:
            reason = EndReason.EXPERIMENT_STOPPED
        message = f"Stopped early by {stopped_by} after {trial.iterations} iteration(s)."
    with transaction.atomic():
        _trial_end(trial, status=status, reason=reason, message=message)
        # A stopped trial's run ends itself (`stopped`, evaluated if its trainer can evaluate the
        # model it has): the trial process may be evaluating it right now. A cancelled one ends here.
        if status == Trial.Status.CANCELLED and trial.run_id:
            run_services.run_stop(run_id=trial.run_id, message=message)
    tuning_job_best_update(job_id=job_id)
    trial.refresh_from_db()
    return trial


def trial_fail(*, job_id: int, ray_trial_id: str, error: str) -> None:
    """Ray reported the trial errored: record the run's own error when it has one."""
    trial = Trial.objects.select_related("job").filter(job_id=job_id, ray_trial_id=ray_trial_id).first()
    if trial is None or trial.is_terminal:
        return
    run = Run.objects.filter(pk=trial.run_id).only("status", "error_message").first()
    message = run.error_message if run is not None and run.error_message else error
    _trial_end(trial, status=Trial.Status.FAILED, reason=EndReason.FAILED, message=message)
    if run is not None:
        run_services.run_end(run_id=run.pk, status=Run.Status.FAILED, message=message)


def trials_end_unfinished(*, job_id: int, reason: str, message: str = "") -> int:
    """End every trial of the job Ray never finished, for `reason`; a trial whose run succeeded
    after Ray stopped listening succeeds. Returns how many ended unfinished."""
    message = message or END_MESSAGES[reason]
    ended = 0
    unfinished = Trial.objects.filter(job_id=job_id).exclude(status__in=Trial.TERMINAL_STATUSES)
    with transaction.atomic():
        for trial in unfinished.select_related("job", "run"):
            if trial.run is not None and trial.run.status == Run.Status.SUCCEEDED:
                _trial_end(trial, status=Trial.Status.SUCCEEDED, reason=EndReason.FINISHED)
                continue
            if trial.run_id:
                run_services.run_stop(run_id=trial.run_id, message=message)
            _trial_end(trial, status=Trial.Status.CANCELLED, reason=reason, message=message)
            ended += 1
    return ended


def trials_stopped_runs_close(*, job_id: int) -> int:
    """After the experiment: runs of stopped trials that never ended themselves (their trial
    process was ended with the experiment before evaluating) end `stopped`, not evaluated."""
    return run_services.runs_stopped_close(
        runs=Run.objects.filter(trial__job_id=job_id, trial__status=Trial.Status.STOPPED),
        message="Stopped early; the experiment ended before this run could be evaluated.",
    )


# A resumed experiment (Tuner.restore with resume_errored) runs errored and unfinished trials again.
RERUN = Q(status=Trial.Status.FAILED) | Q(end_reason=EndReason.INTERRUPTED)


def trials_reset_for_rerun(*, job_id: int) -> int:
    """Failed and interrupted trials of a job back to `pending` with their runs `queued`, so a
    resumed experiment executes them again; finished ones are kept."""
    rerun = list(Trial.objects.filter(RERUN, job_id=job_id).values_list("pk", "run_id"))
    for _pk, run_id in rerun:
        if run_id:
            run_services.run_reset(run_id=run_id)
    Trial.objects.filter(pk__in=[pk for pk, _ in rerun]).update(
        status=Trial.Status.PENDING, end_reason="", error_message="", finished_at=None, started_at=None
    )
    return len(rerun)


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
