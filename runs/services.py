"""State transitions of runs. Every write to a run goes through here."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q, QuerySet
from django.utils import timezone

from tunix_rt.exceptions import InvalidTransition, ValidationError
from tunix_rt.limits import active_limit_check

from .models import Evaluation, LogLine, MetricPoint, Run
from .trainers.base import EvaluationResult
from .trainers.registry import get_trainer

MAX_NAME_LENGTH = 200


def run_validate(*, trainer: Any, dataset: Any, hyperparameters: Any, owner=None) -> dict[str, Any]:
    """Complete, validated hyperparameters for a run, or ValidationError naming the field."""
    if not isinstance(trainer, str):
        raise ValidationError("must be a trainer name", field="trainer")
    if not isinstance(dataset, str):
        raise ValidationError("must be a dataset name", field="dataset")
    return get_trainer(trainer).validate(dataset=dataset, hyperparameters=hyperparameters, user=owner)


def run_output_dir(run_id: int) -> Path:
    return settings.DATA_DIR / "runs" / str(run_id)


def run_create(
    *,
    owner,
    trainer: str,
    dataset: str,
    hyperparameters: dict[str, Any] | None = None,
    name: str = "",
    enqueue: bool = True,
) -> Run:
    """Validate and store a run; with `enqueue`, execute it on a Celery worker after commit."""
    values = run_validate(trainer=trainer, dataset=dataset, hyperparameters=hyperparameters or {}, owner=owner)
    if len(name) > MAX_NAME_LENGTH:
        raise ValidationError(f"must be at most {MAX_NAME_LENGTH} characters", field="name")
    with transaction.atomic():
        if enqueue:
            _check_active_run_limit(owner=owner)
        run = Run.objects.create(owner=owner, name=name, trainer=trainer, dataset=dataset, hyperparameters=values)
        output_dir = run_output_dir(run.pk)
        # A folder already there belongs to a run that no longer exists (a database reset, or
        # SQLite reusing the ids of rolled-back rows): never mix its files into this run.
        shutil.rmtree(output_dir, ignore_errors=True)
        run.output_dir = str(output_dir)
        run.save(update_fields=["output_dir"])
        if enqueue:
            from .tasks import execute_run_task

            transaction.on_commit(lambda: execute_run_task.delay(run.pk))
    return run


def _check_active_run_limit(*, owner) -> None:
    # Trials are bounded by their job; this caps stand-alone runs.
    active_limit_check(
        owner_id=owner.pk,
        active=Run.objects.filter(owner=owner, trial__isnull=True, status__in=Run.ACTIVE_STATUSES),
        cap=settings.TUNIX_RT["MAX_ACTIVE_RUNS_PER_USER"],
        what="runs",
    )


def run_cancel(*, run: Run) -> Run:
    """Cancel a queued run at once; ask a running one to stop (it ends `cancelled` shortly)."""
    updated = Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(
        status=Run.Status.CANCELLED, finished_at=timezone.now(), error_message="Cancelled before it started."
    )
    if not updated:
        updated = Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    if not updated:
        raise InvalidTransition(f"run {run.pk} is already {run.status} and cannot be cancelled")
    return run


def run_begin(*, run_id: int) -> bool:
    """Claim a queued run for execution. False if it is no longer queued (cancelled, or
    already claimed by another delivery of the same task)."""
    now = timezone.now()
    claimed = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
        status=Run.Status.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1
    )
    if claimed:
        Path(run_output_dir(run_id)).mkdir(parents=True, exist_ok=True)
    return bool(claimed)


def run_reset(*, run_id: int) -> bool:
    """Put an unfinished, failed or stopped run back to `queued` so it executes again (a retried
    or resumed trial; a trial Tune stopped because its experiment was interrupted). Its metric
    points are overwritten step by step, its log continues, an evaluation it had is dropped (it is
    evaluated again); a succeeded run is never reset."""
    with transaction.atomic():
        reset = (
            Run.objects.filter(pk=run_id)
            .exclude(status__in=[Run.Status.QUEUED, Run.Status.SUCCEEDED])
            .update(
                status=Run.Status.QUEUED,
                started_at=None,
                finished_at=None,
                heartbeat_at=None,
                error_message="",
                error_traceback="",
                cancel_requested=False,
            )
        )
        if reset:
            Evaluation.objects.filter(run_id=run_id).delete()
    return bool(reset)


def run_heartbeat(*, run_id: int) -> None:
    Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(heartbeat_at=timezone.now())


def run_cancel_requested(*, run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, cancel_requested=True).exists()


def run_metrics_record(*, run_id: int, points: Sequence[tuple[int, dict[str, float]]]) -> None:
    """Store metric points in bulk; idempotent on (run, step) so replayed results overwrite."""
    if not points:
        return
    latest: dict[int, dict[str, float]] = {}
    for step, values in points:
        latest.setdefault(step, {}).update(values)
    now = timezone.now()
    MetricPoint.objects.bulk_create(
        [MetricPoint(run_id=run_id, step=step, values=values, recorded_at=now) for step, values in latest.items()],
        update_conflicts=True,
        unique_fields=["run", "step"],
        update_fields=["values", "recorded_at"],
        batch_size=1000,
    )
    last_step = max(latest)
    run = Run.objects.only("latest_metrics").get(pk=run_id)
    merged = dict(run.latest_metrics)
    for step in sorted(latest):
        merged.update(latest[step])
    Run.objects.filter(pk=run_id).update(latest_metrics=merged, last_step=last_step, heartbeat_at=now)


def run_logs_append(*, run_id: int, lines: Iterable[tuple[str, str]]) -> None:
    """Append (stream, text) lines, keeping only the newest LOG_MAX_LINES of the run. A line's
    `seq` is its number in the run's whole output, dropped lines included."""
    limit = settings.TUNIX_RT["LOG_MAX_LINES"]
    width = settings.TUNIX_RT["LOG_MAX_LINE_CHARS"]
    lines = list(lines)
    if not lines:
        return
    with transaction.atomic():
        last = LogLine.objects.filter(run_id=run_id).aggregate(m=Max("seq"))["m"] or 0
        # Lines of this batch past the limit are never written, but they are counted.
        skipped = max(0, len(lines) - limit)
        LogLine.objects.bulk_create(
            [
                LogLine(
                    run_id=run_id,
                    seq=last + skipped + i,
                    stream=stream,
                    text=text if len(text) <= width else text[:width] + " …[truncated]",
                )
                for i, (stream, text) in enumerate(lines[skipped:], start=1)
            ]
        )
        newest = last + len(lines)
        if newest > limit:
            skipped += LogLine.objects.filter(run_id=run_id, seq__lte=newest - limit).delete()[0]
        if skipped:
            Run.objects.filter(pk=run_id).update(log_lines_dropped=F("log_lines_dropped") + skipped)


def run_finish(*, run_id: int, result: EvaluationResult, stopped_early: bool = False) -> Run:
    """Mark a running run succeeded (or `stopped` early by a scheduler) and store its evaluation
    (exactly once)."""
    score = result.primary_score
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.status != Run.Status.RUNNING:
            raise InvalidTransition(f"run {run_id} is {run.status}, not running")
        Evaluation.objects.create(
            run=run,
            metrics=result.metrics,
            primary_metric=result.primary_metric,
            primary_score=score,
            details=result.details,
        )
        run.status = Run.Status.STOPPED if stopped_early else Run.Status.SUCCEEDED
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at"])
    return run


def run_end(*, run_id: int, status: str, message: str = "", traceback: str = "") -> bool:
    """End a run that is not yet terminal as failed, cancelled or stopped early (without an
    evaluation). False if it already ended."""
    if status not in (Run.Status.FAILED, Run.Status.CANCELLED, Run.Status.STOPPED):
        raise ValueError(status)
    return bool(
        Run.objects.filter(pk=run_id, status__in=Run.ACTIVE_STATUSES).update(
            status=status,
            error_message=message[:10_000],
            error_traceback=traceback[-20_000:],
            finished_at=timezone.now(),
        )
    )


def runs_stopped_close(*, runs: QuerySet[Run], message: str) -> int:
    """End these runs, where still active, as stopped early without an evaluation: their trial
    was stopped by a scheduler and the experiment ended before they could be evaluated."""
    return runs.filter(status__in=Run.ACTIVE_STATUSES).update(
        status=Run.Status.STOPPED, error_message=message[:10_000], finished_at=timezone.now()
    )


def run_stop(*, run_id: int, message: str) -> bool:
    """End a run that its driver stopped (a scheduler, a cancel, the experiment's end) as
    `cancelled` with the driver's reason. The trial process may already have ended it with a
    generic "cancelled on request": the reason the driver knows overwrites it. A finished run
    keeps its result. False if nothing changed."""
    return bool(
        Run.objects.filter(pk=run_id)
        .filter(Q(status__in=Run.ACTIVE_STATUSES) | Q(status=Run.Status.CANCELLED))
        .update(
            status=Run.Status.CANCELLED,
            error_message=message[:10_000],
            cancel_requested=True,
            finished_at=timezone.now(),
        )
    )


def runs_cancel_request(*, runs: QuerySet[Run]) -> int:
    """Ask these runs, where still active, to stop: the pipeline polls the flag and ends its
    trainer within about a second."""
    return runs.filter(status__in=Run.ACTIVE_STATUSES).update(cancel_requested=True)


def runs_cancel(*, runs: QuerySet[Run], message: str) -> int:
    """End these runs, where still active, as cancelled at once (nothing executes them)."""
    return runs.filter(status__in=Run.ACTIVE_STATUSES).update(
        status=Run.Status.CANCELLED, error_message=message[:10_000], cancel_requested=True, finished_at=timezone.now()
    )


def run_delete_outputs(*, run: Run) -> None:
    if run.output_dir:
        shutil.rmtree(run.output_dir, ignore_errors=True)
