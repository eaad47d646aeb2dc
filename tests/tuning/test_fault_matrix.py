"""SIGKILL and SIGTERM of the tuning worker for every searcher and every scheduler, with two
trials at a time: the job succeeds with exactly its trials, the trials that were running are run
again as the same trials, the finished ones are untouched, and numbers stay 1..N.

Cases are parametrized only where the code differs. Random and grid search are one generator
(Tune's BasicVariantGenerator, tuning/raytune/runner.py): its jobs here expand a grid parameter
and sample a random one, so each covers both; Optuna goes through the product's
IndexedSearchGenerator. Each of the two generators and each scheduler (FIFO, ASHA) meets both
faults. Workers form a chain: the worker that recovers a job runs the next case's job, so each
case costs one worker start. Leases are long (STALE_AFTER_S = 600) and the reaper is never
called: a killed worker's job must be taken back by the next worker starting on this host,
within 30 s.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from runs.models import Run
from tests.conftest import WorkerProcess, wait_for
from tests.tuning import faultkit
from tests.tuning.faultkit import assert_consistent, start_job
from tests.tuning.trainers import hold_gate
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
EPOCH_DELAY_S = 0.3
# Trials that reach this epoch once another trial of their job ended hold there until the test
# opens their job's gate after the fault (tests/tuning/trainers.py): the fault always meets
# finished trials and running ones.
HOLD_AFTER_EPOCH = 2
# Basic-variant jobs: 2 grid values x 2 samples of a random parameter = 4 trials.
BASIC = {
    "search_space": {
        "x": {"type": "grid", "values": [0.3, 0.7]},
        "epoch_delay_s": {"type": "uniform", "low": EPOCH_DELAY_S - 0.05, "high": EPOCH_DELAY_S + 0.05},
    },
    "search_algorithm": "random",
    "num_samples": 2,
    "fixed_hyperparameters": {"epochs": EPOCHS, "hold_after_epoch": HOLD_AFTER_EPOCH},
}
OPTUNA = {
    "search_space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
    "search_algorithm": "optuna",
    "num_samples": 4,
    "fixed_hyperparameters": {"epochs": EPOCHS, "epoch_delay_s": EPOCH_DELAY_S, "hold_after_epoch": HOLD_AFTER_EPOCH},
}
SEARCHERS = {"random+grid": BASIC, "optuna": OPTUNA}
CASES = [
    ("random+grid", "fifo", "kill"),
    ("random+grid", "asha", "term"),
    ("optuna", "asha", "kill"),
    ("optuna", "fifo", "term"),
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
    """Until a trial ended (succeeded, or stopped by ASHA) and another holds, running."""

    def mid_job() -> bool:
        trials = Trial.objects.filter(job=job)
        return (
            trials.filter(status__in=Trial.TERMINAL_STATUSES).exists()
            and trials.filter(status=Trial.Status.RUNNING, run__log_lines__text__startswith="holding at epoch").exists()
        )

    wait_for(mid_job, timeout=90, interval=0.1, message="a finished trial and a running one")


def _after_the_fault(job: TuningJob) -> tuple[dict[int, int], set[int]]:
    """Once the worker is gone (nothing writes any more): the finished trials' run ids, and the
    interrupted trials: unfinished, their run executing (a kill) or ended `stopped` by Tune
    stopping its trials on the interrupt (a SIGTERM); either runs again on resume."""
    trials = Trial.objects.filter(job=job)
    done = dict(trials.filter(status__in=Trial.TERMINAL_STATUSES).values_list("pk", "run_id"))
    interrupted = trials.exclude(status__in=Trial.TERMINAL_STATUSES).filter(
        run__status__in=[Run.Status.RUNNING, Run.Status.STOPPED]
    )
    return done, set(interrupted.values_list("pk", flat=True))


@pytest.mark.parametrize(("searcher", "scheduler", "fault"), CASES)
def test_worker_fault_mid_job_resumes_the_same_trials_to_success(chain, api_client, searcher, scheduler, fault):
    first = chain.current
    name = f"matrix {searcher} {scheduler} {fault}"
    gate = hold_gate(name)
    gate.touch()
    job = start_job(
        api_client,
        name=name,
        scheduler=scheduler,
        max_concurrent_trials=2,
        **SEARCHERS[searcher],
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
    assert interrupted, list(Trial.objects.filter(job=job).values_list("number", "status", "run__status"))

    gate.unlink()  # the interrupted trials run through when they run again
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
