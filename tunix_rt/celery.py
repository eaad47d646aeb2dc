"""The Celery application. Workers: `celery -A tunix_rt worker -Q runs,tuning`."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown, worker_shutting_down

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunix_rt.settings")

app = Celery("tunix_rt")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _shutdown_ray(**_kwargs) -> None:
    """Stop Ray with the worker: otherwise two Ray agent processes are orphaned, ignore SIGTERM and
    hold ~170 MiB."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@worker_shutting_down.connect
def _save_experiment_on_shutdown(**_kwargs) -> None:
    """Warm shutdown (SIGTERM): a running experiment saves Ray's state and its job goes back to
    the queue for the next worker (docs/operations.md)."""
    import sys

    runner = sys.modules.get("tuning.raytune.runner")  # imported only by a worker that ran a job
    if runner is not None:
        runner.request_interrupt("the worker is shutting down")
