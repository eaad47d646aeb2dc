"""Shared pieces of the fault tests: a throwaway Redis, workers on it, jobs started through the
API, and the consistency every job must keep whatever happened to its workers."""

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
from tuning.services import stale_work_reap
from tunix_rt.celery import app

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
