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
import socket
import subprocess
from collections import Counter

import kombu.pools
import pytest
import redis
from kombu.utils.functional import lazy

from runs.models import Run
from tests.conftest import WorkerProcess, wait_for
from tuning.models import Trial, TuningJob
from tuning.services import stale_work_reap, tuning_storage_path
from tuning.tasks import run_tuning_job_task
from tunix_rt.celery import app

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOBS = "/api/tuning/jobs/"
STALE_AFTER_S = 8
WORKER_ENV = {
    "TUNIX_RT_HEARTBEAT_INTERVAL_S": "1",
    "TUNIX_RT_STALE_AFTER_S": str(STALE_AFTER_S),
    "TUNIX_RT_EXPERIMENT_CHECKPOINT_S": "1",
}


class RedisServer:
    """A throwaway `redis-server` without persistence, stoppable and restartable on its port."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        wait_for(lambda: _pings(client), timeout=10, interval=0.1, message="the throwaway redis-server to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def _point_app_at(url: str) -> None:
    """Publish (tasks, pings) to `url` from this process, on fresh connections."""
    for key in ("broker_url", "broker_read_url", "broker_write_url"):  # all three come from settings
        app.conf[key] = url
    kombu.pools.reset()  # the producer pools are global, keyed by connection
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    app.control.mailbox._producer_pool = lazy(lambda: app.amqp.producer_pool)


@pytest.fixture(scope="module")
def broker():
    server = RedisServer()
    server.start()
    original = app.conf.broker_url
    _point_app_at(server.url)
    yield server
    _point_app_at(original)
    server.stop()


@pytest.fixture
def fast_leases(settings):
    """The test process (API, reaper) uses the workers' lease length."""
    settings.TUNIX_RT = {**settings.TUNIX_RT, "HEARTBEAT_INTERVAL_S": 1, "STALE_AFTER_S": STALE_AFTER_S}


@pytest.fixture
def workers(broker, fast_leases):
    """Start workers on the throwaway broker; all of them are stopped (and their Ray killed) after."""
    started: list[WorkerProcess] = []

    def start(label: str) -> WorkerProcess:
        worker = WorkerProcess(
            name=f"fault-{label}-{os.getpid()}", extra_env={**WORKER_ENV, "CELERY_BROKER_URL": broker.url}
        )
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop(sig=signal.SIGKILL, timeout=1)


def start_job(api_client, **data) -> TuningJob:
    data = {
        "name": "fault",
        "trainer": "test-quick",
        "dataset": "none",
        "search_space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
        "num_samples": 3,
        "max_concurrent_trials": 1,
        "seed": 7,
        **data,
    }
    created = api_client.post(JOBS, data, format="json")
    assert created.status_code == 201, created.content
    started = api_client.post(f"{JOBS}{created.json()['id']}/start/")
    assert started.status_code == 202, started.content
    return TuningJob.objects.get(pk=created.json()["id"])


def finished(job: TuningJob, timeout: float = 120, reap: bool = False) -> TuningJob:
    def done() -> bool:
        if reap:
            stale_work_reap()
        return TuningJob.objects.get(pk=job.pk).is_terminal

    wait_for(done, timeout=timeout, interval=0.5, message=f"job {job.pk} to end")
    return TuningJob.objects.get(pk=job.pk)


def assert_consistent(job: TuningJob, *, epochs: int) -> list[Trial]:
    """Every trial terminal and counted once, one run per trial, metrics once per step, and the
    best run is the best succeeded trial's."""
    trials = list(Trial.objects.filter(job=job).select_related("run"))
    counts = Counter(t.status for t in trials)
    assert len(trials) == sum(counts[s] for s in Trial.TERMINAL_STATUSES), counts
    assert len({t.ray_trial_id for t in trials}) == len(trials)
    assert sorted(t.number for t in trials) == list(range(1, len(trials) + 1))
    run_ids = [t.run_id for t in trials if t.run_id]
    assert len(set(run_ids)) == len(run_ids)
    assert Run.objects.filter(name__startswith=f"{job.name} · trial").count() == len(run_ids)  # no stray run
    assert not Run.objects.filter(pk__in=run_ids, status__in=Run.ACTIVE_STATUSES).exists()
    succeeded = [t for t in trials if t.status == Trial.Status.SUCCEEDED]
    for trial in succeeded:
        assert trial.run.status == Run.Status.SUCCEEDED and trial.run.evaluation.primary_metric == "score"
        assert list(trial.run.metric_points.values_list("step", flat=True)) == list(range(1, epochs + 1))
    if succeeded:
        best = max(succeeded, key=lambda t: t.best_metric_value)
        assert job.best_run_id == best.run_id
    else:
        assert job.best_run_id is None
    return trials


def wait_mid_job(job: TuningJob) -> dict[int, int]:
    """Wait until one trial succeeded and the next is running; the finished trials' run ids."""

    def mid_job() -> bool:
        trials = Trial.objects.filter(job=job)
        return (
            trials.filter(status=Trial.Status.SUCCEEDED).exists()
            and trials.filter(status=Trial.Status.RUNNING, run__metric_points__isnull=False).exists()
        )

    wait_for(mid_job, timeout=90, interval=0.1, message="a finished trial and a running one")
    return dict(Trial.objects.filter(job=job, status=Trial.Status.SUCCEEDED).values_list("pk", "run_id"))


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
