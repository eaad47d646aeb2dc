"""Tune callbacks: thin adapters from Tune events to tuning services, built from ids only.

They run in the driver (the Celery worker) and are pickled into the experiment state, so they
hold no connection or thread in their pickled state. A failing write is logged and never raised:
an exception raised inside a Tune callback aborts the whole experiment.

Service calls are applied in order by one background writer thread, so Tune's event loop never
waits on the database (the driver's loop is what limits trial throughput with reused actors).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from ray import tune

from tuning import services

from .trainables import plain

logger = logging.getLogger(__name__)

# Trial progress (iterations, latest/best value) is written at most this often per trial;
# per-epoch metrics themselves are written by the run pipeline inside the trial.
RESULT_FLUSH_INTERVAL_S = 0.5
STOP_POLL_INTERVAL_S = 0.5
DRAIN_TIMEOUT_S = 120


def _guarded(action: str, function: Callable, **kwargs) -> Any:
    try:
        return function(**kwargs)
    except Exception:
        logger.exception("tuning callback could not %s (%s)", action, kwargs)
        return None


class _Writer:
    """Applies service calls in submission order on one daemon thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="tuning-writer", daemon=True)
        self._thread.start()

    def submit(self, action: str, function: Callable, **kwargs) -> None:
        self._queue.put((action, function, kwargs))

    def drain(self, *, stop: bool = False) -> None:
        """Wait until every submitted call is applied; with `stop`, end the thread."""
        done = threading.Event()
        self._queue.put(("drain", done, {"stop": stop}))
        if not done.wait(DRAIN_TIMEOUT_S):
            logger.error("tuning writer did not drain within %ss", DRAIN_TIMEOUT_S)

    def _loop(self) -> None:
        try:
            while True:
                action, function, kwargs = self._queue.get()
                if action == "drain":
                    function.set()
                    if kwargs["stop"]:
                        return
                    continue
                _guarded(action, function, **kwargs)
        finally:
            connection.close()


# The callbacks of the experiment running in this process, by job id. A restored experiment
# unpickles its own instances, so the runner finds them here to drain and stop them after fit().
_live: dict[int, list] = {}


def _track(job_id: int, callback) -> None:
    callbacks = _live.setdefault(job_id, [])
    if not any(c is callback for c in callbacks):
        callbacks.append(callback)


def close_callbacks(job_id: int) -> None:
    """Apply every pending trial write and stop the stopper's poller (after fit())."""
    for callback in _live.pop(job_id, []):
        callback.close()


class TrialRecorder(tune.Callback):
    """Writes trials as Ray creates, starts, reports, completes and fails them."""

    def __init__(self, job_id: int, metric: str, mode: str, stopped_by: str):
        self.job_id = job_id
        self.metric = metric
        self.mode = mode
        self.stopped_by = stopped_by
        self._unsaved: dict[str, tuple[int, float | None]] = {}
        self._last_flush: dict[str, float] = {}
        self._registered: set[str] = set()
        self._writer: _Writer | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_writer": None}

    def _submit(self, action: str, function: Callable, **kwargs) -> None:
        if self._writer is None:
            self._writer = _Writer()
            _track(self.job_id, self)
        self._writer.submit(action, function, job_id=self.job_id, **kwargs)

    def close(self) -> None:
        """Apply every pending write and stop the writer (the runner calls this after fit)."""
        self._flush_all()
        if self._writer is not None:
            self._writer.drain(stop=True)
            self._writer = None

    def on_step_end(self, iteration, trials, **info):
        # Tune has no "trial added" hook: register new trials (pending) on the step that made them.
        for trial in trials:
            if trial.trial_id not in self._registered:
                self._registered.add(trial.trial_id)
                self._submit(
                    "register a trial",
                    services.trial_register,
                    ray_trial_id=trial.trial_id,
                    hyperparameters=plain(trial.config),
                )

    def on_trial_start(self, iteration, trials, trial, **info):
        self._registered.add(trial.trial_id)
        self._submit(
            "start a trial", services.trial_start, ray_trial_id=trial.trial_id, hyperparameters=plain(trial.config)
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
        # Trials report their epoch; Tune's own iteration counter is the fallback.
        iteration_done = result.get("epoch") or result.get("training_iteration") or 0
        self._unsaved[trial.trial_id] = (int(iteration_done), value)
        now = time.monotonic()
        if now - self._last_flush.get(trial.trial_id, 0.0) >= RESULT_FLUSH_INTERVAL_S:
            self._flush(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._flush(trial.trial_id)
        self._submit(
            "complete a trial", services.trial_complete, ray_trial_id=trial.trial_id, stopped_by=self.stopped_by
        )

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Tune retries the trial (FailureConfig.max_failures): its run is reset when it restarts.
        self._flush(trial.trial_id)
        logger.warning("tuning job %s: trial %s failed and is retried", self.job_id, trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._flush(trial.trial_id)
        error = getattr(trial, "error_message", None) or _read_error(trial) or "the trial raised an error"
        self._submit("fail a trial", services.trial_fail, ray_trial_id=trial.trial_id, error=error)

    def on_experiment_end(self, trials, **info):
        self._flush_all()

    def _flush_all(self) -> None:
        for trial_id in list(self._unsaved):
            self._flush(trial_id)

    def _flush(self, trial_id: str) -> None:
        self._last_flush[trial_id] = time.monotonic()
        if trial_id not in self._unsaved:
            return
        iteration, value = self._unsaved.pop(trial_id)
        self._submit(
            "record a result",
            services.trial_result_record,
            ray_trial_id=trial_id,
            iteration=iteration,
            value=value,
            mode=self.mode,
        )


def _read_error(trial) -> str:
    try:
        with open(trial.error_file) as fh:
            lines = [line for line in fh.read().strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""
    except Exception:
        return ""


class JobStopper(tune.Stopper):
    """Ends the experiment when the job is cancelled or too many trials failed. A daemon thread
    polls the job every STOP_POLL_INTERVAL_S; Tune's loop only reads the flag."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.reason = ""
        self._poller: threading.Thread | None = None
        self._closed: threading.Event | None = None

    def __getstate__(self) -> dict:
        # A resumed experiment starts with no stop reason: the job was sent back to run.
        return {**self.__dict__, "reason": "", "_poller": None, "_closed": None}

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        if self._poller is None and not self.reason:
            self._closed = threading.Event()
            self._poller = threading.Thread(target=self._poll, args=(self._closed,), name="tuning-stopper", daemon=True)
            self._poller.start()
            _track(self.job_id, self)
        return bool(self.reason)

    def close(self) -> None:
        if self._closed is not None:
            self._closed.set()
            self._poller.join(timeout=5)
            self._poller = self._closed = None

    def _poll(self, closed: threading.Event) -> None:
        try:
            while not closed.wait(STOP_POLL_INTERVAL_S):
                reason = _guarded("poll the job", services.tuning_job_should_stop, job_id=self.job_id)
                if reason:
                    self.reason = reason
                    return
        finally:
            connection.close()
