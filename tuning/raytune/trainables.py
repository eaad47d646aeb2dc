"""What runs inside a Ray trial process: the trial's run, executed by the run pipeline.

Ray imports this module in its worker processes, before Django is set up: Django and the apps are
imported inside the function only. The worker's environment (settings module, database, data
folder, trainer plugins) comes from the `runtime_env` the runner passed to `ray.init`.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

# Shortest interval between two results forwarded to Tune by one trial (see run_trial).
TUNE_REPORT_MIN_INTERVAL_S = 0.05


class TrialRunFailed(RuntimeError):
    """The trial's run failed; Tune records the trial as errored with this message."""


def _django_setup() -> None:
    import django
    from django.apps import apps

    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunix_rt.settings")
        django.setup()


def plain(value: Any) -> Any:
    """A JSON-safe copy of a sampled config (Ray samples numpy scalars for some domains)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        return item()
    return value


def run_trial(config: dict[str, Any], job_id: int) -> None:
    """Create (or claim) the trial's run, execute it reporting every epoch to Tune, and fail the
    trial if the run failed. A scheduler stop ends the run `cancelled` at its next report."""
    _django_setup()
    import ray
    from django.db import connections
    from ray import tune

    from runs import selectors as run_selectors
    from runs.execution import execute_run
    from runs.models import Run
    from runs.trainers.base import RunCancelled, RunStoppedEarly
    from tuning import services

    ray_trial_id = tune.get_context().get_trial_id()
    stopped_by_tune = False
    last_forward = -math.inf
    unforwarded: tuple[int, dict[str, float]] | None = None

    def forward(step: int, metrics: dict[str, float]) -> None:
        nonlocal stopped_by_tune
        try:
            tune.report({**metrics, "epoch": step})
        except SystemExit:
            # Tune stops a trial by exiting its thread inside report(): the run ends first
            # (`stopped`, evaluated when its trainer can evaluate the model it has).
            stopped_by_tune = True
            if services.tuning_job_should_stop(job_id=job_id) == "cancelled":
                raise RunCancelled() from None  # the user cancelled the job, not a scheduler
            raise RunStoppedEarly() from None

    def on_report(step: int, metrics: dict[str, float]) -> None:
        # Every report is stored by the run pipeline; Tune gets at most one per
        # TUNE_REPORT_MIN_INTERVAL_S (the latest), which is all its schedulers need and keeps a
        # trainer reporting every few milliseconds from being throttled by Tune's driver loop.
        nonlocal last_forward, unforwarded
        now = time.monotonic()
        if now - last_forward >= TUNE_REPORT_MIN_INTERVAL_S:
            last_forward, unforwarded = now, None
            forward(step, metrics)
        else:
            unforwarded = (step, metrics)

    try:
        run_id = services.trial_run_claim(job_id=job_id, ray_trial_id=ray_trial_id, sampled=plain(config))
        node = ray.get_runtime_context().get_node_id() or ""
        services.trial_node_record(job_id=job_id, ray_trial_id=ray_trial_id, node=node)
        run = execute_run(run_id, on_report=on_report)
        if run is None:
            # Not executed: its run had ended already (a restored experiment hands a trial that
            # finished after the last state save to its trial function again). Tune needs the
            # trial's result (without its metric Tune fails the whole experiment; a searcher
            # learns from it): the last one the run stored.
            run = Run.objects.only("status", "error_message").get(pk=run_id)
            unforwarded = None if run.status == Run.Status.FAILED else run_selectors.run_metrics_latest(run_id=run_id)
        if not stopped_by_tune and unforwarded is not None and run.status != Run.Status.FAILED:
            try:
                forward(*unforwarded)  # Tune sees the final epoch too
            except (RunCancelled, RunStoppedEarly):
                pass  # the run has ended already; a stop only ends the trial's thread (below)
        if stopped_by_tune:
            # Exit the thread as Tune expects: returning would make Tune's wrapper report a final
            # result nobody reads, and the actor could not be reused for the next trial.
            raise SystemExit(0)
        if run.status == Run.Status.FAILED:
            raise TrialRunFailed(run.error_message or f"run {run_id} failed")
    finally:
        # Each trial runs in a new thread of a reused actor: close its database connection.
        connections.close_all()
