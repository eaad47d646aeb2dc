"""The Celery application. Workers: `celery -A tunix_rt worker -Q runs,tuning`."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import (
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

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


_pool_child = False


@worker_process_init.connect
def _pool_child_ignores_sigterm(**_kwargs) -> None:
    """A pool child does not die on SIGTERM (which a service manager sends to the whole process
    group): dying while the main process begins its warm shutdown could hang that shutdown, and
    would fail its run. Ignored until it runs a task (billiard replaces any other handler after
    this signal), then handled: its run stops and goes back to the queue within RUN_STOP_GRACE_S."""
    import signal

    from billiard.process import current_process

    global _pool_child
    # Celery 5.7 sends this signal from the solo pool too, in the main process, whose SIGTERM
    # must stay Celery's warm shutdown (a tuning worker saves its experiment then). Celery tells
    # the two apart the same way.
    if current_process()._name == "MainProcess":
        return
    _pool_child = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@task_prerun.connect
def _pool_child_handles_sigterm(**_kwargs) -> None:
    import signal

    if _pool_child:  # never in a solo worker: its SIGTERM is Celery's warm shutdown
        signal.signal(signal.SIGTERM, _stop_runs_of_this_process)


def _stop_runs_of_this_process(*_args) -> None:
    from django.conf import settings

    from runs.execution import execution_shutdown_request

    execution_shutdown_request(grace_s=settings.TUNIX_RT["RUN_STOP_GRACE_S"])


def _forward_sigterm_to_pool_children() -> None:
    """SIGTERM to the main process alone: its pool children (forks, with its command line; not the
    Ray processes of a solo tuning worker) give their runs back too."""
    import signal

    import psutil

    me = psutil.Process()
    for child in me.children():
        try:
            if child.cmdline() == me.cmdline():
                child.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass


@worker_shutting_down.connect
def _save_experiment_on_shutdown(**_kwargs) -> None:
    """Warm shutdown (SIGTERM): pool children give their runs back; a running experiment saves
    Ray's state and its job goes back to the queue for the next worker (docs/operations.md)."""
    import sys

    _forward_sigterm_to_pool_children()

    runner = sys.modules.get("tuning.raytune.runner")  # imported only by a worker that ran a job
    if runner is not None:
        runner.request_interrupt("the worker is shutting down")


@worker_ready.connect
def _reclaim_jobs_of_dead_local_workers(**_kwargs) -> None:
    """A worker (re)starting on a host takes back at once the jobs whose driver was a process of
    this host that is gone (a killed worker), instead of waiting for their lease to expire."""
    import logging

    from django.db import connection

    from tuning.services import tuning_jobs_reclaim_from_dead_local_workers

    try:
        taken = tuning_jobs_reclaim_from_dead_local_workers()
        if taken:
            logging.getLogger(__name__).warning("took back tuning jobs %s of a dead worker on this host", taken)
    except Exception:  # the database may be down at start; the reaper still acts at lease expiry
        logging.getLogger(__name__).exception("could not check for jobs of dead workers on this host")
    finally:
        connection.close()
