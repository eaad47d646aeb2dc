from __future__ import annotations

from celery import shared_task


@shared_task(name="tuning.tasks.run_tuning_job_task")
def run_tuning_job_task(job_id: int) -> None:
    """Run one tuning job's Ray Tune experiment in this worker (queue `tuning`)."""
    from .raytune.runner import tuning_job_run  # Ray is imported by the worker only

    tuning_job_run(job_id=job_id)


@shared_task(name="tuning.tasks.reap_stale_work_task")
def reap_stale_work_task() -> dict[str, int]:
    """Periodic (beat): resume or fail jobs and runs whose worker was lost (queue `runs`)."""
    from .services import stale_work_reap

    return stale_work_reap()
