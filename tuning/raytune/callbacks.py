"""Tune callbacks: thin adapters from Tune events to tuning services, built from ids only.

They run in the driver (the Celery worker) and are pickled into the experiment state, so they
hold no connection. A failing write is logged and never raised: an exception in a callback
aborts the whole experiment (shared/DOMAIN.md).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from ray import tune

from tuning import services

from .trainables import plain

logger = logging.getLogger(__name__)

# Trial progress (iterations, latest/best value) is written at most this often per experiment;
# per-epoch metrics themselves are written by the run pipeline inside the trial.
RESULT_FLUSH_INTERVAL_S = 0.5
STOP_POLL_INTERVAL_S = 0.5


def _guarded(action: str, function, **kwargs) -> Any:
    try:
        return function(**kwargs)
    except Exception:
        logger.exception("tuning callback could not %s (%s)", action, kwargs)
        return None


class TrialRecorder(tune.Callback):
    """Writes trials as Ray creates, starts, reports, completes and fails them."""

    def __init__(self, job_id: int, metric: str, mode: str, stopped_by: str):
        self.job_id = job_id
        self.metric = metric
        self.mode = mode
        self.stopped_by = stopped_by
        self._best: dict[str, float] = {}
        self._unsaved: dict[str, tuple[int, float | None]] = {}
        self._last_flush = 0.0

    def on_trial_add(self, iteration, trials, trial, **info):
        _guarded(
            "register a trial",
            services.trial_register,
            job_id=self.job_id,
            ray_trial_id=trial.trial_id,
            hyperparameters=plain(trial.config),
        )

    def on_trial_start(self, iteration, trials, trial, **info):
        _guarded(
            "start a trial",
            services.trial_start,
            job_id=self.job_id,
            ray_trial_id=trial.trial_id,
            hyperparameters=plain(trial.config),
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
        if value is not None:
            best = self._best.get(trial.trial_id)
            if best is None or (value > best if self.mode == "max" else value < best):
                self._best[trial.trial_id] = value
        self._unsaved[trial.trial_id] = (int(result.get("training_iteration", 0)), value)
        if time.monotonic() - self._last_flush >= RESULT_FLUSH_INTERVAL_S:
            self._flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._flush(trial.trial_id)
        _guarded(
            "complete a trial",
            services.trial_complete,
            job_id=self.job_id,
            ray_trial_id=trial.trial_id,
            stopped_by=self.stopped_by,
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        self._flush(trial.trial_id)
        error = getattr(trial, "error_message", None) or _read_error(trial) or "the trial raised an error"
        _guarded("fail a trial", services.trial_fail, job_id=self.job_id, ray_trial_id=trial.trial_id, error=error)

    def on_experiment_end(self, trials, **info):
        self._flush()

    def _flush(self, only: str | None = None) -> None:
        ids = [only] if only is not None else list(self._unsaved)
        for trial_id in ids:
            if trial_id not in self._unsaved:
                continue
            iteration, value = self._unsaved.pop(trial_id)
            _guarded(
                "record a result",
                services.trial_result_record,
                job_id=self.job_id,
                ray_trial_id=trial_id,
                iteration=iteration,
                value=value,
                best=self._best.get(trial_id),
                mode=self.mode,
            )
        if only is None:
            self._last_flush = time.monotonic()


def _read_error(trial) -> str:
    try:
        with open(trial.error_file) as fh:
            lines = [line for line in fh.read().strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""
    except Exception:
        return ""


class JobStopper(tune.Stopper):
    """Ends the experiment when the job is cancelled or too many trials failed (polls the job)."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.reason = ""
        self._last_poll = 0.0

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self.reason and now - self._last_poll >= STOP_POLL_INTERVAL_S:
            self._last_poll = now
            self.reason = _guarded("poll the job", services.tuning_job_should_stop, job_id=self.job_id) or ""
        return bool(self.reason)
