"""Cancelling a job while a command trainer or the Tunix trainer runs inside one of its Ray trials:
the trainer's whole process tree ends and its run ends `cancelled`."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from runs.models import Run
from tests.conftest import assert_processes_gone, wait_for
from tests.tuning.test_integration import trainer_processes
from tuning.models import Trial, TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOBS = "/api/tuning/jobs/"


def start_job(api_client, **data) -> TuningJob:
    created = api_client.post(JOBS, {"name": "cancel a trainer", "num_samples": 1, **data}, format="json")
    assert created.status_code == 201, created.content
    assert api_client.post(f"{JOBS}{created.json()['id']}/start/").status_code == 202
    return TuningJob.objects.get(pk=created.json()["id"])


def cancel_and_wait(api_client, job: TuningJob) -> TuningJob:
    response = api_client.post(f"{JOBS}{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    wait_for(lambda: TuningJob.objects.get(pk=job.pk).is_terminal, timeout=60, message="the cancelled job to end")
    return TuningJob.objects.get(pk=job.pk)


def assert_cancelled(job: TuningJob) -> Run:
    assert job.status == TuningJob.Status.CANCELLED, job.error_message
    (trial,) = Trial.objects.filter(job=job).select_related("run")
    assert trial.status == Trial.Status.CANCELLED
    assert trial.run.status == Run.Status.CANCELLED, trial.run.error_message
    assert not Run.objects.filter(pk=trial.run_id, evaluation__isnull=False).exists()
    return trial.run


def test_cancel_ends_a_command_trainer_in_a_trial_with_its_whole_process_tree(celery_worker, api_client):
    job = start_job(
        api_client,
        trainer="quadratic",
        dataset="bowl",
        search_space={"learning_rate": {"type": "uniform", "low": 0.01, "high": 0.1}},
        fixed_hyperparameters={"epochs": 10_000, "sleep_s": 0.2, "spawn": "escaped"},
    )

    def helpers() -> list[int] | None:  # the command's child and its grandchild (outside its group)
        run = Run.objects.filter(trial__job=job, status=Run.Status.RUNNING).first()
        pid_file = run and Path(run.output_dir) / "helpers.pid"
        pids = pid_file and pid_file.exists() and [int(pid) for pid in pid_file.read_text().split()]
        return pids if pids and len(pids) == 2 else None

    pids = wait_for(helpers, timeout=90, message="the command trainer and its helpers running in a trial")
    commands = [p.pid for p in psutil.Process(celery_worker.proc.pid).children(recursive=True) if _is_quadratic(p)]
    assert commands, "the command trainer runs under the worker's Ray"

    job = cancel_and_wait(api_client, job)

    run = assert_cancelled(job)
    assert run.metric_points.exists()
    assert_processes_gone([*commands, *pids], timeout=30)


def test_cancel_ends_a_tunix_trainer_in_a_trial(celery_worker, api_client):
    job = start_job(
        api_client,
        trainer="tunix-sft",
        dataset="addition@1",
        search_space={"learning_rate": {"type": "grid", "values": [1e-3]}},
        search_algorithm="grid",
        metric="eval_loss",
        mode="min",
        # Far more steps than the test waits for; one held-out report every 5 steps.
        fixed_hyperparameters={"max_steps": 100_000, "eval_interval": 5, "eval_items": 4, "max_new_tokens": 8},
    )
    wait_for(
        lambda: Run.objects.filter(trial__job=job, status=Run.Status.RUNNING, metric_points__isnull=False).exists(),
        timeout=180,
        interval=0.5,
        message="the Tunix trial to report its first steps",
    )
    actors = [p.pid for p in trainer_processes(celery_worker)]
    assert actors

    job = cancel_and_wait(api_client, job)

    run = assert_cancelled(job)
    assert run.metric_points.count() < 100_000 // 5
    assert_processes_gone(actors, timeout=30)  # the trial's process, with the model and JAX in it


def _is_quadratic(proc: psutil.Process) -> bool:
    try:
        return any("quadratic.py" in part for part in proc.cmdline())
    except psutil.Error:
        return False
