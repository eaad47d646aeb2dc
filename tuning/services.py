"""State transitions of tuning jobs and trials. Every write to a job or a trial goes through here.

The web process calls the job services (create, start, cancel, clone); the tuning worker and Ray
trial processes call the experiment services (begin, trial_*, finalize) with ids only.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from runs import services as run_services
from runs.models import Run
from runs.trainers.base import Trainer
from runs.trainers.registry import get_trainer
from tunix_rt.exceptions import InvalidTransition, ServiceUnavailable, ValidationError

from .limits import active_job_limit_check
from .models import Trial, TuningJob
from .search_space import limit, total_trials, validate_search_space

MAX_NAME_LENGTH = 200
MAX_CONCURRENT_TRIALS = 64
MAX_TIME_BUDGET_S = 7 * 24 * 3600
MAX_CPUS_PER_TRIAL = 256
MAX_GPUS_PER_TRIAL = 16
MAX_SEED = 2**31 - 1
ERROR_MESSAGE_CHARS = 10_000


# --- jobs (web process) ---------------------------------------------------------------------------


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
        if not isinstance(dataset, str) or dataset not in trainer_obj.dataset_names():
            errors["dataset"] = [
                f"unknown dataset {dataset!r} for trainer {trainer_obj.name!r}; "
                f"choose one of {sorted(trainer_obj.dataset_names())}"
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
) -> TuningJob:
    """Validate and store a job in status `created` (nothing is stored on error)."""
    values = tuning_job_validate(
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
    from .tasks import run_tuning_job_task

    with transaction.atomic():
        active_job_limit_check(owner_id=job.owner_id)
        queued = TuningJob.objects.filter(pk=job.pk, status=TuningJob.Status.CREATED).update(
            status=TuningJob.Status.QUEUED, queued_at=timezone.now()
        )
        if not queued:
            job.refresh_from_db(fields=["status"])
            raise InvalidTransition(_not_startable(job.status))
        transaction.on_commit(lambda: run_tuning_job_task.delay(job.pk))
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
        if not done:
            done = TuningJob.objects.filter(pk=job.pk, status=TuningJob.Status.RUNNING).update(cancel_requested=True)
            # The run pipeline polls this flag and stops (and kills) its trainer within ~1 s.
            Run.objects.filter(trial__job_id=job.pk, status__in=Run.ACTIVE_STATUSES).update(cancel_requested=True)
    job.refresh_from_db()
    if not done:
        raise InvalidTransition(f"the job is already {job.status} and cannot be cancelled")
    return job


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
    )


# --- experiment (tuning worker and Ray trials; ids only) ------------------------------------------


def tuning_job_begin(*, job_id: int, lease_owner: str, experiment_path: str) -> bool:
    """Claim a queued job for this worker. False if it is not queued (cancelled, or claimed by
    another delivery of the same task): one experiment per job."""
    now = timezone.now()
    return bool(
        TuningJob.objects.filter(pk=job_id, status=TuningJob.Status.QUEUED).update(
            status=TuningJob.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            lease_owner=lease_owner[:200],
            experiment_path=experiment_path[:500],
        )
    )


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
        message = (
            f"All {total} trials failed" + (f"; first error: {first_error}" if first_error else "")
            if total
            else "The experiment ended without running any trial."
        )
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
