"""A prefork runs worker stopped the way a service manager stops it: SIGTERM to its whole process
group (the main process and its pool children at once) while a run is in flight. The worker must
exit within the documented grace period every time, and the run goes back to the queue for the
next worker instead of being lost (docs/operations.md, "Stopping workers")."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from runs.models import Run
from tests.conftest import WorkerProcess, wait_for
from tests.tuning import faultkit

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

broker = faultkit.broker

# docs/operations.md: a runs worker stops within STOP_GRACE_S of SIGTERM (its runs stop at their
# next report or poll, every 0.5 s at most, and are requeued).
STOP_GRACE_S = 15
TRIES = 3


def test_sigterm_to_the_process_group_of_a_prefork_worker_stops_it_within_the_grace_period(broker, api_client):
    created = api_client.post(
        "/api/runs/",
        {"trainer": "sklearn-mlp", "dataset": "digits", "hyperparameters": {"epochs": 400, "epoch_delay_s": 0.1}},
        format="json",
    )
    assert created.status_code == 201, created.content
    run_id = created.json()["id"]
    stopped_in: list[float] = []
    for attempt in range(1, TRIES + 1):
        worker = WorkerProcess(
            queues="runs",
            name=f"runs-stop-{attempt}-{os.getpid()}",
            extra_env={"CELERY_BROKER_URL": broker.url},
            pool="prefork",
            concurrency=2,
        ).start()
        try:
            wait_for(
                lambda attempt=attempt: Run.objects.filter(pk=run_id, status="running", attempts=attempt).exists(),
                timeout=60,
                message=f"the run to execute (attempt {attempt})",
            )
            began = time.monotonic()
            os.killpg(worker.proc.pid, signal.SIGTERM)  # systemd's KillMode=control-group
            try:
                worker.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"attempt {attempt}: the worker did not stop within {STOP_GRACE_S} s of SIGTERM")
            stopped_in.append(time.monotonic() - began)
        finally:
            worker.stop(sig=signal.SIGKILL, timeout=1)
        run = Run.objects.get(pk=run_id)
        assert run.status == Run.Status.QUEUED, (run.status, run.error_message)  # given back, not lost
        assert run.last_step < 400
    assert max(stopped_in) < STOP_GRACE_S, stopped_in


def test_sigterm_to_a_solo_worker_that_ran_a_task_is_a_warm_shutdown(broker, api_client):
    # Celery 5.7 sends worker_process_init from the solo pool too: a solo worker (the tuning
    # worker) once took itself for a pool child at its first task, and SIGTERM stopped nothing.
    worker = WorkerProcess(
        queues="runs", name=f"solo-stop-{os.getpid()}", extra_env={"CELERY_BROKER_URL": broker.url}
    ).start()
    try:
        created = api_client.post(
            "/api/runs/",
            {"trainer": "sklearn-mlp", "dataset": "iris", "hyperparameters": {"epochs": 2}},
            format="json",
        )
        assert created.status_code == 201, created.content
        wait_for(
            lambda: Run.objects.filter(pk=created.json()["id"], status=Run.Status.SUCCEEDED).exists(),
            timeout=60,
            message="the run to succeed",
        )
        worker.proc.send_signal(signal.SIGTERM)
        try:
            worker.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the solo worker did not stop within {STOP_GRACE_S} s of SIGTERM")
        assert worker.proc.returncode == 0
    finally:
        worker.stop(sig=signal.SIGKILL, timeout=1)
