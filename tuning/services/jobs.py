"""Job services the web process calls: validate, create, start, cancel, clone. No Ray import."""

from __future__ import annotations

import importlib.util
import logging
import math
from typing import Any

from django.db import transaction
from django.utils import timezone

from runs.models import Run
from runs.trainers.base import Trainer
from runs.trainers.registry import get_trainer
from tunix_rt.exceptions import InvalidTransition, ServiceUnavailable, ValidationError

from ..limits import active_job_limit_check
from ..models import Trial, TuningJob
from ..search_space import limit, total_trials, validate_search_space

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 200
MAX_CONCURRENT_TRIALS = 64
MAX_TIME_BUDGET_S = 7 * 24 * 3600
MAX_CPUS_PER_TRIAL = 256
MAX_GPUS_PER_TRIAL = 16
MAX_SEED = 2**31 - 1
MAX_TRIAL_RETRIES = 10


def _int_field(errors: dict, field: str, value: Any, *, low: int, high: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors[field] = ["must be an integer"]
        return None
    if not low <= value <= high:
        errors[field] = [f"must be between {low} and {high}"]
        return None
    return value


def _float_field(errors: dict, field: str, value: Any, *, low: float, high: float, low_open: bool) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        errors[field] = ["must be a finite number"]
        return None
    if (value <= low if low_open else value < low) or value > high:
        errors[field] = [f"must be {'>' if low_open else '>='} {low} and <= {high}"]
        return None
    return float(value)


def tuning_job_validate(
    *,
    owner=None,
    name: Any,
    trainer: Any,
    dataset: Any,
    search_space: Any,
    metric: Any = None,
    mode: Any = None,
    fixed_hyperparameters: Any = None,
    num_samples: Any = 10,
    max_concurrent_trials: Any = 1,
    search_algorithm: Any = "random",
    scheduler: Any = "fifo",
    time_budget_s: Any = None,
    cpus_per_trial: Any = 1.0,
    gpus_per_trial: Any = 0.0,
    seed: Any = None,
    max_failed_trials: Any = None,
    max_trial_retries: Any = 0,
) -> dict[str, Any]:
    """The complete, normalised configuration of a job, or ValidationError naming every bad field."""
    errors: dict[str, Any] = {}
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["must be a non-empty string"]
    elif len(name) > MAX_NAME_LENGTH:
        errors["name"] = [f"must be at most {MAX_NAME_LENGTH} characters"]
    num_samples = _int_field(errors, "num_samples", num_samples, low=1, high=limit("MAX_TRIALS"))
    max_concurrent_trials = _int_field(
        errors, "max_concurrent_trials", max_concurrent_trials, low=1, high=MAX_CONCURRENT_TRIALS
    )
    time_budget_s = _int_field(errors, "time_budget_s", time_budget_s, low=1, high=MAX_TIME_BUDGET_S, optional=True)
    seed = _int_field(errors, "seed", seed, low=0, high=MAX_SEED, optional=True)
    max_failed_trials = _int_field(
        errors, "max_failed_trials", max_failed_trials, low=0, high=limit("MAX_TRIALS"), optional=True
    )
    max_trial_retries = _int_field(errors, "max_trial_retries", max_trial_retries, low=0, high=MAX_TRIAL_RETRIES)
    cpus_per_trial = _float_field(
        errors, "cpus_per_trial", cpus_per_trial, low=0, high=MAX_CPUS_PER_TRIAL, low_open=True
    )
    gpus_per_trial = _float_field(
        errors, "gpus_per_trial", gpus_per_trial, low=0, high=MAX_GPUS_PER_TRIAL, low_open=False
    )
    if search_algorithm not in TuningJob.SearchAlgorithm.values:
        errors["search_algorithm"] = [f"must be one of {', '.join(TuningJob.SearchAlgorithm.values)}"]
    if scheduler not in TuningJob.Scheduler.values:
        errors["scheduler"] = [f"must be one of {', '.join(TuningJob.Scheduler.values)}"]
    if mode is not None and mode not in TuningJob.Mode.values:
        errors["mode"] = ["must be max or min"]

    trainer_obj: Trainer | None = None
    try:
        if not isinstance(trainer, str):
            raise ValidationError("must be a trainer name", field="trainer")
        trainer_obj = get_trainer(trainer)
    except ValidationError as exc:
        errors.update(exc.as_dict())

    fixed: dict[str, Any] = {}
    space: dict[str, Any] = {}
    if trainer_obj is not None:
        datasets = trainer_obj.dataset_names(owner)
        if not isinstance(dataset, str) or dataset not in datasets:
            errors["dataset"] = [
                f"unknown dataset {dataset!r} for trainer {trainer_obj.name!r}; choose one of {sorted(datasets)}"
            ]
        fixed = _fixed_validate(errors, trainer_obj, fixed_hyperparameters)
        try:
            space = validate_search_space(
                search_space,
                trainer=trainer_obj,
                fixed=fixed,
                search_algorithm=search_algorithm if search_algorithm in TuningJob.SearchAlgorithm.values else "random",
                num_samples=num_samples or 1,
            )
        except ValidationError as exc:
            errors.update(exc.as_dict())
        if metric is None:
            metric = trainer_obj.default_metric
        if mode is None:
            mode = trainer_obj.default_mode
        if not isinstance(metric, str) or not metric:
            errors["metric"] = ["must be the name of a metric the trainer reports"]
        elif trainer_obj.metrics and metric not in trainer_obj.metrics:
            errors["metric"] = [
                f"trainer {trainer_obj.name!r} reports {', '.join(trainer_obj.metrics)}; got {metric!r}"
            ]
    if space and num_samples and "num_samples" not in errors and total_trials(space, num_samples) > limit("MAX_TRIALS"):
        errors["num_samples"] = [f"the job would run more than {limit('MAX_TRIALS')} trials"]
    if (
        max_failed_trials is not None
        and num_samples
        and space
        and max_failed_trials >= total_trials(space, num_samples)
    ):
        errors["max_failed_trials"] = ["must be less than the number of trials"]
    if errors:
        raise ValidationError("invalid tuning job", errors=errors)
    return {
        "name": name.strip(),
        "trainer": trainer,
        "dataset": dataset,
        "search_space": space,
        "metric": metric,
        "mode": mode,
        "fixed_hyperparameters": fixed,
        "num_samples": num_samples,
        "max_concurrent_trials": max_concurrent_trials,
        "search_algorithm": search_algorithm,
        "scheduler": scheduler,
        "time_budget_s": time_budget_s,
        "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial,
        "seed": seed,
        "max_failed_trials": max_failed_trials,
        "max_trial_retries": max_trial_retries,
    }


def _fixed_validate(errors: dict, trainer: Trainer, fixed: Any) -> dict[str, Any]:
    if fixed is None:
        return {}
    if not isinstance(fixed, dict):
        errors["fixed_hyperparameters"] = ["must be a JSON object of name: value"]
        return {}
    problems: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for name, value in fixed.items():
        param = trainer.hyperparameter(name)
        if param is None:
            problems[name] = [f"not a hyperparameter of trainer {trainer.name!r}"]
            continue
        try:
            values[name] = param.validate(value)
        except ValueError as exc:
            problems[name] = [str(exc)]
    if problems:
        errors["fixed_hyperparameters"] = problems
    return values


def tuning_job_create(
    *,
    owner,
    name: str,
    trainer: str,
    dataset: str,
    search_space: dict[str, Any],
    metric: str | None = None,
    mode: str | None = None,
    fixed_hyperparameters: dict[str, Any] | None = None,
    num_samples: int = 10,
    max_concurrent_trials: int = 1,
    search_algorithm: str = "random",
    scheduler: str = "fifo",
    time_budget_s: int | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    seed: int | None = None,
    max_failed_trials: int | None = None,
    max_trial_retries: int = 0,
) -> TuningJob:
    """Validate and store a job in status `created` (nothing is stored on error)."""
    values = tuning_job_validate(
        owner=owner,
        name=name,
        trainer=trainer,
        dataset=dataset,
        search_space=search_space,
        metric=metric,
        mode=mode,
        fixed_hyperparameters=fixed_hyperparameters,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent_trials,
        search_algorithm=search_algorithm,
        scheduler=scheduler,
        time_budget_s=time_budget_s,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        seed=seed,
        max_failed_trials=max_failed_trials,
        max_trial_retries=max_trial_retries,
    )
    return TuningJob.objects.create(owner=owner, **values)


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
    if job.status != TuningJob.Status.CREATED:
        raise InvalidTransition(_not_startable(job.status))
    _check_can_run_experiments()
    with transaction.atomic():
        active_job_limit_check(owner_id=job.owner_id)
        queued = TuningJob.objects.filter(pk=job.pk, status=TuningJob.Status.CREATED).update(
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


RESUMABLE_STATUSES = (TuningJob.Status.FAILED, TuningJob.Status.CANCELLED)


def tuning_job_resume(*, job: TuningJob) -> TuningJob:
    """Send a failed or cancelled job back to the queue: the worker continues its experiment from
    Ray's saved state, reruns its failed trials (their runs reset) and keeps every finished one."""
    if job.status not in RESUMABLE_STATUSES:
        raise InvalidTransition(f"the job is {job.status}; only a failed or cancelled job can be resumed")
    if not job.experiment_path:
        raise InvalidTransition("the job never started an experiment; clone it to run it")
    _check_can_run_experiments()
    from .experiment import trials_reset_for_rerun

    with transaction.atomic():
        queued = TuningJob.objects.filter(pk=job.pk, status__in=RESUMABLE_STATUSES).update(
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


def tuning_job_cancel(*, job: TuningJob) -> TuningJob:
    """Cancel a created or queued job at once; ask a running one to stop (it ends `cancelled`)."""
    now = timezone.now()
    with transaction.atomic():
        done = TuningJob.objects.filter(
            pk=job.pk, status__in=[TuningJob.Status.CREATED, TuningJob.Status.QUEUED]
        ).update(
            status=TuningJob.Status.CANCELLED,
            cancel_requested=True,
            finished_at=now,
            error_message="Cancelled before it started.",
        )
        if done:
            # A job requeued after a lost or stopped worker already has trials: end the unfinished.
            _trials_cancel_unfinished(job.pk, now)
        if not done:
            done = TuningJob.objects.filter(pk=job.pk, status=TuningJob.Status.RUNNING).update(cancel_requested=True)
            # The run pipeline polls this flag and stops (and kills) its trainer within ~1 s.
            Run.objects.filter(trial__job_id=job.pk, status__in=Run.ACTIVE_STATUSES).update(cancel_requested=True)
    job.refresh_from_db()
    if not done:
        raise InvalidTransition(f"the job is already {job.status} and cannot be cancelled")
    return job


def _trials_cancel_unfinished(job_id: int, now) -> None:
    message = "Cancelled with the job."
    unfinished = Trial.objects.filter(job_id=job_id).exclude(status__in=Trial.TERMINAL_STATUSES)
    Run.objects.filter(trial__in=unfinished, status__in=Run.ACTIVE_STATUSES).update(
        status=Run.Status.CANCELLED, error_message=message, cancel_requested=True, finished_at=now
    )
    unfinished.update(status=Trial.Status.CANCELLED, error_message=message, finished_at=now)


def tuning_job_clone(*, job: TuningJob, owner) -> TuningJob:
    """A new `created` job with the same configuration, named "<name> (copy)"."""
    suffix = " (copy)"
    return tuning_job_create(
        owner=owner,
        name=job.name[: MAX_NAME_LENGTH - len(suffix)] + suffix,
        trainer=job.trainer,
        dataset=job.dataset,
        search_space=job.search_space,
        metric=job.metric,
        mode=job.mode,
        fixed_hyperparameters=job.fixed_hyperparameters,
        num_samples=job.num_samples,
        max_concurrent_trials=job.max_concurrent_trials,
        search_algorithm=job.search_algorithm,
        scheduler=job.scheduler,
        time_budget_s=job.time_budget_s,
        cpus_per_trial=job.cpus_per_trial,
        gpus_per_trial=job.gpus_per_trial,
        seed=job.seed,
        max_failed_trials=job.max_failed_trials,
        max_trial_retries=job.max_trial_retries,
    )
