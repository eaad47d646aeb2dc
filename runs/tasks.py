from __future__ import annotations

from celery import shared_task
from celery.exceptions import Reject

from .execution import execute_run, execution_shutting_down
from .models import Run


@shared_task(name="runs.tasks.execute_run_task")
def execute_run_task(run_id: int) -> None:
    """Execute one stand-alone run; a run given back by a stopping worker is requeued."""
    run = execute_run(run_id)
    if run is not None and run.status == Run.Status.QUEUED and execution_shutting_down():
        raise Reject("the worker is shutting down", requeue=True)
