from __future__ import annotations

from celery import shared_task

from .execution import execute_run


@shared_task(name="runs.tasks.execute_run_task")
def execute_run_task(run_id: int) -> None:
    """Execute one stand-alone run."""
    execute_run(run_id)
