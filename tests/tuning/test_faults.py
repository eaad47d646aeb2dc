"""Fault injection with real worker processes: SIGKILL and SIGTERM of the worker driving an
experiment, the same job delivered twice, the broker going away, a trainer that always fails.

Every test here uses its own throwaway Redis (started by this module on a free port) and its own
workers, so the session's shared worker never takes these jobs. Workers heartbeat every second
and a lease lasts 8 s: a lost worker is noticed within seconds, while a worker busy with a cold Ray start
on a loaded machine (seconds without a heartbeat written) is not taken for a lost one.
"""

from __future__ import annotations

import os
import signal

import pytest

from runs.models import Run
from tests.conftest import wait_for
from tests.tuning import faultkit
from tests.tuning.faultkit import JOBS, _point_app_at, assert_consistent, finished, start_job, wait_mid_job
from tuning.models import Trial, TuningJob
from tuning.services import tuning_storage_path
from tuning.tasks import run_tuning_job_task

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

broker, fast_leases, workers = faultkit.broker, faultkit.fast_leases, faultkit.workers


SLOW = {"fixed_hyperparameters": {"epochs": 4, "epoch_delay_s": 0.4}}


def test_sigkill_mid_job_resumes_on_a_new_worker_without_rerunning_finished_trials(workers, api_client):
    first = workers("kill-a")
    job = start_job(api_client, **SLOW)
    done_before = wait_mid_job(job)
    first.stop(sig=signal.SIGKILL, timeout=5)
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.RUNNING  # nobody told the database

    workers("kill-b")
    job = finished(job, reap=True)  # the reaper sees the lease expire and requeues the job

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    assert job.attempts == 2
    trials = assert_consistent(job, epochs=4)
    assert len(trials) == 3 and all(t.status == Trial.Status.SUCCEEDED for t in trials)
    for trial in trials:
        if trial.pk in done_before:  # kept, not executed again
            assert trial.run_id == done_before[trial.pk] and trial.run.attempts == 1
    assert max(t.run.attempts for t in trials) == 2  # the interrupted trial re-executed its run


def test_sigterm_mid_job_saves_state_and_requeues_for_the_next_worker(workers, api_client):
    first = workers("term-a")
    job = start_job(api_client, **SLOW)
    done_before = wait_mid_job(job)
    first.stop(sig=signal.SIGTERM, timeout=30)
    assert first.proc.returncode == 0  # a warm shutdown, not a kill
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.QUEUED

    workers("term-b")
    job = finished(job)  # no reaper: the requeued job's new message drives the resume

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    assert job.attempts == 2
    trials = assert_consistent(job, epochs=4)
    assert len(trials) == 3 and all(t.status == Trial.Status.SUCCEEDED for t in trials)
    for trial in trials:
        if trial.pk in done_before:
            assert trial.run_id == done_before[trial.pk] and trial.run.attempts == 1


def test_same_job_delivered_to_two_workers_runs_one_experiment(workers, api_client):
    one, two = workers("twice-a"), workers("twice-b")
    storage = tuning_storage_path()
    folders_before = set(os.listdir(storage))
    job = start_job(api_client, fixed_hyperparameters={"epochs": 2})
    run_tuning_job_task.delay(job.pk)  # the broker hands the job out a second time
    job = finished(job)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    assert job.attempts == 1  # claimed once
    assert len(assert_consistent(job, epochs=2)) == 3
    logs = [w.log_path.read_text(errors="replace") for w in (one, two)]
    assert sum(f"tuning job {job.pk} is not queued; not running it" in log for log in logs) == 1
    assert set(os.listdir(storage)) - folders_before == {os.path.basename(job.experiment_path)}  # one experiment


def test_broker_down_during_a_job_refuses_starts_and_recovers(workers, api_client, broker):
    workers("broker")
    job = start_job(api_client, **SLOW)
    wait_for(lambda: Trial.objects.filter(job=job).exists(), timeout=60, interval=0.2, message="a trial")
    broker.stop()
    try:
        reads = api_client.get(f"{JOBS}{job.pk}/")
        assert reads.status_code == 200
        created = api_client.post(
            JOBS,
            {
                "name": "while down",
                "trainer": "test-quick",
                "dataset": "none",
                "search_space": {"x": {"type": "choice", "values": [0.2, 0.9]}},
                "num_samples": 2,
            },
            format="json",
        )
        assert created.status_code == 201
        refused = api_client.post(f"{JOBS}{created.json()['id']}/start/")
        assert refused.status_code == 503 and "broker is unreachable" in refused.json()["detail"]
        assert TuningJob.objects.get(pk=created.json()["id"]).status == TuningJob.Status.CREATED  # still startable
        job = finished(job)  # the running experiment needs the database, not the broker
    finally:
        broker.start()
    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    assert len(assert_consistent(job, epochs=4)) == 3

    try:
        later = TuningJob.objects.get(pk=created.json()["id"])
        # The same job, through the same (stale) connection pool: no repair, no restart.
        assert api_client.post(f"{JOBS}{later.pk}/start/").status_code == 202
        later = finished(later)
        assert later.status == TuningJob.Status.SUCCEEDED, later.error_message
        assert len(assert_consistent(later, epochs=3)) == 2
    finally:
        _point_app_at(broker.url)  # fresh connections for the next test's worker pings


def test_trainer_failing_every_time_is_retried_then_fails_the_job_at_the_cap(workers, api_client):
    workers("fail")
    job = start_job(
        api_client,
        fixed_hyperparameters={"epochs": 3, "fail_at_epoch": 2},
        max_trial_retries=1,
        max_failed_trials=1,
    )
    job = finished(job)

    assert job.status == TuningJob.Status.FAILED
    assert "2 trials failed, more than max_failed_trials=1" in job.error_message
    trials = assert_consistent(job, epochs=3)
    failed = [t for t in trials if t.status == Trial.Status.FAILED]
    assert len(failed) == 2 and not any(t.status == Trial.Status.SUCCEEDED for t in trials)
    for trial in failed:
        assert "boom at epoch 2" in trial.error_message
        assert trial.run.status == Run.Status.FAILED and trial.run.attempts == 2  # one retry each
    assert job.best_run_id is None


def test_resume_reruns_failed_trials_of_a_failed_job(workers, api_client):
    """A failed job resumed from the API: failed trials run again (here they fail again: the
    trainer is deterministic) in the same experiment, without new trials or duplicate runs."""
    workers("resume")
    job = start_job(api_client, fixed_hyperparameters={"epochs": 2, "fail_at_epoch": 2}, num_samples=2)
    job = finished(job)
    assert job.status == TuningJob.Status.FAILED and "All 2 trials failed" in job.error_message
    runs_before = set(Trial.objects.filter(job=job).values_list("run_id", flat=True))

    response = api_client.post(f"{JOBS}{job.pk}/resume/")
    assert response.status_code == 202 and response.json()["status"] in ("queued", "running")
    job = finished(job)

    assert job.status == TuningJob.Status.FAILED
    trials = assert_consistent(job, epochs=2)
    assert set(t.run_id for t in trials) == runs_before
    assert all(t.status == Trial.Status.FAILED and t.run.attempts == 2 for t in trials)
    assert api_client.post(f"{JOBS}{job.pk}/cancel/").status_code == 409
