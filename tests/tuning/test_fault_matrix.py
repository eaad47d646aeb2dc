"""SIGKILL and SIGTERM of the tuning worker for every searcher and every scheduler, with two
trials at a time: the job succeeds with exactly its trials, the trials that were running are run
again as the same trials, the finished ones are untouched, and numbers stay 1..N.

Each (searcher, scheduler) pair meets one fault, and each searcher and each scheduler meets both.
Workers form a chain: the worker that recovers a job runs the next case's job, so each case costs
one worker start. Leases are long (STALE_AFTER_S = 600) and the reaper is never called: a killed
worker's job must be taken back by the next worker starting on this host, within 30 s.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import WorkerProcess, wait_for
from tests.tuning import faultkit
from tests.tuning.faultkit import assert_consistent, start_job
from tuning.models import Trial, TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

broker = faultkit.broker

LONG_LEASE_ENV = {
    "TUNIX_RT_HEARTBEAT_INTERVAL_S": "1",
    "TUNIX_RT_STALE_AFTER_S": "600",
    # The product's default: trials created or finished since the last save are unknown to a
    # restored experiment, which is what a real crash meets.
    "TUNIX_RT_EXPERIMENT_CHECKPOINT_S": "5",
}
RECOVERY_BUDGET_S = 30
EPOCHS = 4
TRIAL = {"epochs": EPOCHS, "epoch_delay_s": 0.3}
SPACES = {
    "random": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
    "grid": {"x": {"type": "grid", "values": [0.2, 0.4, 0.6, 0.8]}},
    "optuna": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
}
CASES = [
    ("random", "fifo", "kill"),
    ("random", "asha", "term"),
    ("grid", "fifo", "term"),
    ("grid", "asha", "kill"),
    ("optuna", "fifo", "kill"),
    ("optuna", "asha", "term"),
]


class WorkerChain:
    """The one idle tuning worker of this module, replaced by a fresh one after each fault."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.started: list[WorkerProcess] = []

    def next(self) -> WorkerProcess:
        env = {**LONG_LEASE_ENV, "CELERY_BROKER_URL": self.broker_url}
        worker = WorkerProcess(name=f"matrix-{len(self.started)}-{os.getpid()}", extra_env=env)
        self.started.append(worker)
        return worker.start()

    @property
    def current(self) -> WorkerProcess:
        return self.started[-1] if self.started else self.next()

    def close(self) -> None:
        for worker in self.started:
            worker.stop(sig=signal.SIGKILL, timeout=1)


@pytest.fixture(scope="module")
def chain(broker):
    workers = WorkerChain(broker.url)
    yield workers
    workers.close()


def _wait_mid_job(job: TuningJob) -> None:
    """Until a trial ended (succeeded, or stopped by ASHA) and another runs with metrics."""

    def mid_job() -> bool:
        trials = Trial.objects.filter(job=job)
        return (
            trials.filter(status__in=Trial.TERMINAL_STATUSES).exists()
            and trials.filter(status=Trial.Status.RUNNING, run__metric_points__isnull=False).exists()
        )

    wait_for(mid_job, timeout=90, interval=0.1, message="a finished trial and a running one")


def _after_the_fault(job: TuningJob) -> tuple[dict[int, int], set[int]]:
    """Once the worker is gone (nothing writes any more): the finished trials' run ids, and the
    interrupted trials (their run executing, not finished)."""
    trials = Trial.objects.filter(job=job)
    done = dict(trials.filter(status__in=Trial.TERMINAL_STATUSES).values_list("pk", "run_id"))
    interrupted = trials.exclude(status__in=Trial.TERMINAL_STATUSES).filter(run__status="running")
    return done, set(interrupted.values_list("pk", flat=True))


@pytest.mark.parametrize(("searcher", "scheduler", "fault"), CASES)
def test_worker_fault_mid_job_resumes_the_same_trials_to_success(chain, api_client, searcher, scheduler, fault):
    first = chain.current
    job = start_job(
        api_client,
        name=f"matrix {searcher} {scheduler} {fault}",
        search_space=SPACES[searcher],
        search_algorithm=searcher,
        scheduler=scheduler,
        num_samples=1 if searcher == "grid" else 4,
        max_concurrent_trials=2,
        fixed_hyperparameters=TRIAL,
    )
    _wait_mid_job(job)
    if fault == "kill":
        first.stop(sig=signal.SIGKILL, timeout=5)
        assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.RUNNING  # nobody told the database
    else:
        first.stop(sig=signal.SIGTERM, timeout=60)
        assert first.proc.returncode == 0  # a warm shutdown, not a kill
        assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.QUEUED
    done_before, interrupted = _after_the_fault(job)
    assert interrupted

    chain.next()
    ready = time.monotonic()  # the new worker answers (its boot is slow on a loaded machine)
    # Running again on the new worker, long before the 600 s lease would have expired.
    wait_for(
        lambda: TuningJob.objects.filter(pk=job.pk, attempts=2).exclude(status=TuningJob.Status.QUEUED).exists(),
        timeout=RECOVERY_BUDGET_S,
        interval=0.2,
        message=f"job {job.pk} to run again on the restarted worker",
    )
    assert time.monotonic() - ready < RECOVERY_BUDGET_S
    job = faultkit.finished(job, timeout=120)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    assert job.attempts == 2
    trials = assert_consistent(job, epochs=EPOCHS)
    assert len(trials) == 4, [(t.number, t.ray_trial_id, t.status) for t in trials]
    allowed = {Trial.Status.SUCCEEDED} | ({Trial.Status.STOPPED} if scheduler == "asha" else set())
    assert {t.status for t in trials} <= allowed, [(t.number, t.status, t.error_message) for t in trials]
    by_pk = {t.pk: t for t in trials}
    for pk in interrupted:  # the interrupted trials ran again as themselves
        assert by_pk[pk].run.attempts == 2, (by_pk[pk].number, by_pk[pk].status)
    for pk, run_id in done_before.items():
        assert by_pk[pk].run_id == run_id and by_pk[pk].run.attempts == 1  # finished: untouched
