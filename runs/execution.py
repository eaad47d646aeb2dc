"""The run pipeline: claim → train (metrics, logs) → evaluate → finish.

`execute_run` depends on nothing but the database: a Celery task calls it for a stand-alone run,
and a Ray Tune trial calls it for a tuning trial, passing `on_report` to forward each epoch's
metrics to Tune (and `should_stop` for an external stop signal).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback as tb
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from tunix_rt.heartbeat import Heartbeat

from . import services
from .models import Run
from .trainers.base import RunCancelled, RunContext, RunStoppedEarly, TrainingFailed
from .trainers.registry import get_trainer

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5

# Set in a worker process that is shutting down (tunix_rt.celery): its run stops at the next
# report or poll and goes back to the queue for another worker.
_shutting_down = threading.Event()


_current_run_id: int | None = None


def execution_shutdown_request(*, grace_s: float) -> None:
    """This process is stopping: the run it executes stops at its next report or poll and is
    requeued. A trainer that does neither within `grace_s` has its run requeued and the process
    ends (the task is redelivered: acks_late, reject_on_worker_lost)."""
    if _shutting_down.is_set():
        return
    _shutting_down.set()

    def hard_stop() -> None:
        run_id = _current_run_id
        if run_id is not None:
            try:
                services.run_reset(run_id=run_id)
            finally:
                os._exit(1)

    timer = threading.Timer(grace_s, hard_stop)
    timer.daemon = True
    timer.start()


def execution_shutting_down() -> bool:
    return _shutting_down.is_set()


CANCEL_POLL_INTERVAL_S = 0.5
TRACEBACK_EXCERPT_CHARS = 4000


class _Recorder:
    """Buffers metrics and log lines and writes them in bulk at most every FLUSH_INTERVAL_S, so
    trainers that report every few milliseconds cost a handful of queries per second."""

    def __init__(self, run_id: int, on_report: Callable[[int, dict], None] | None):
        self.run_id = run_id
        self.on_report = on_report
        self.points: list[tuple[int, dict[str, float]]] = []
        self.lines: list[tuple[str, str]] = []
        self.last_flush = time.monotonic()
        self.last_cancel_poll = 0.0
        self.cancelled = False
        self.max_points = settings.TUNIX_RT["METRIC_MAX_POINTS"]
        self.steps: set[int] = set()
        self.last_step: int | None = None
        self.stopped_early = False

    def report(self, step: int, metrics: dict[str, float]) -> None:
        # A step reported again overwrites its point (replayed trials): only new steps count.
        if step in self.steps or len(self.steps) < self.max_points:
            self.steps.add(step)
            self.points.append((step, metrics))
        elif len(self.steps) == self.max_points:
            self.steps.add(step)  # past the limit once: say so once
            self.log(f"metric point limit reached ({self.max_points} steps); later steps are not stored", "system")
        self.last_step = step
        self._maybe_flush()
        if self.on_report is not None:
            try:
                self.on_report(step, metrics)
            except RunStoppedEarly:
                self.stopped_early = True
                raise

    def log(self, text: str, stream: str = "stdout") -> None:
        for line in text.splitlines() or [""]:
            self.lines.append((stream, line))
        self._maybe_flush()

    def should_stop(self) -> bool:
        if _shutting_down.is_set():
            return True
        now = time.monotonic()
        if not self.cancelled and now - self.last_cancel_poll >= CANCEL_POLL_INTERVAL_S:
            self.last_cancel_poll = now
            self.cancelled = services.run_cancel_requested(run_id=self.run_id)
        # Trainers that wait on something else (a subprocess) poll here: keep their logs live.
        self._maybe_flush()
        return self.cancelled

    def _maybe_flush(self) -> None:
        if time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        points, lines = self.points, self.lines
        self.points, self.lines = [], []
        self.last_flush = time.monotonic()
        services.run_metrics_record(run_id=self.run_id, points=points)
        services.run_logs_append(run_id=self.run_id, lines=lines)


def execute_run(
    run_id: int,
    *,
    on_report: Callable[[int, dict[str, float]], None] | None = None,
) -> Run | None:
    """Execute a queued run to its end. Returns the run, or None if it was not queued (already
    claimed by another delivery, or cancelled before it started)."""
    global _current_run_id
    if not services.run_begin(run_id=run_id):
        logger.info("run %s is not queued; not executing it", run_id)
        return None
    run = Run.objects.get(pk=run_id)
    _current_run_id = run_id
    # A trainer that reports nothing for a long time is not taken for a lost one by the reaper.
    heartbeat = Heartbeat(f"run-{run_id}-heartbeat", beat=lambda: services.run_heartbeat(run_id=run_id))
    heartbeat.start()
    try:
        return _execute(run, on_report)
    finally:
        _current_run_id = None
        heartbeat.stop()


def _execute(run: Run, on_report: Callable[[int, dict[str, float]], None] | None) -> Run:
    run_id = run.pk
    recorder = _Recorder(run_id, on_report)
    ctx = RunContext(
        run_id=run_id,
        hyperparameters=run.hyperparameters,
        dataset=run.dataset,
        output_dir=Path(run.output_dir),
        report=recorder.report,
        log=recorder.log,
        should_stop=recorder.should_stop,
    )
    try:
        trainer = get_trainer(run.trainer)
        recorder.log(f"run {run_id}: trainer {run.trainer} on {run.dataset} with {run.hyperparameters}", "system")
        state = trainer.train(ctx)
        if recorder.should_stop():
            raise RunCancelled()
        stopped_early = recorder.stopped_early
        if stopped_early:
            recorder.log("stopped early by Ray Tune; evaluating the model trained so far", "system")
        result = trainer.evaluate(ctx, state)
        recorder.log(f"evaluation: {result.primary_metric}={result.primary_score:.6g} {result.metrics}", "system")
        recorder.flush()
        services.run_finish(run_id=run_id, result=result, stopped_early=stopped_early)
    except RunStoppedEarly:
        message = (
            f"Stopped early by Ray Tune at step {recorder.last_step}; "
            "this trainer cannot evaluate a partly trained model."
        )
        recorder.log(message, "system")
        recorder.flush()
        services.run_end(run_id=run_id, status=Run.Status.STOPPED, message=message)
    except RunCancelled:
        if _shutting_down.is_set() and not services.run_cancel_requested(run_id=run_id):
            recorder.log("the worker is shutting down: the run goes back to the queue", "system")
            recorder.flush()
            services.run_reset(run_id=run_id)
        else:
            recorder.log("cancelled on request", "system")
            recorder.flush()
            services.run_end(run_id=run_id, status=Run.Status.CANCELLED, message="Cancelled on request.")
    except BaseException as exc:
        if isinstance(exc, TrainingFailed):
            message, excerpt = str(exc), exc.detail[-TRACEBACK_EXCERPT_CHARS:]
            recorder.log(message, "system")
        else:
            message = f"{type(exc).__name__}: {exc}"
            excerpt = "".join(tb.format_exception(exc))[-TRACEBACK_EXCERPT_CHARS:]
            recorder.log(excerpt, "stderr")
        try:
            recorder.flush()
        finally:
            services.run_end(run_id=run_id, status=Run.Status.FAILED, message=message, traceback=excerpt)
        if not isinstance(exc, Exception):
            raise
    return Run.objects.get(pk=run_id)
