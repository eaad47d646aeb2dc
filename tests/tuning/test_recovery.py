"""Recovery pieces without workers: trial numbers whatever the trial ids look like, trial ids a
restored experiment gives back, and a restarted worker taking back the jobs of a dead driver of
its own host (the real processes are in test_fault_matrix.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from tests.factories import TuningJobFactory
from tuning import services
from tuning.models import Trial, TuningJob
from tuning.services.experiment import lease_holder_is_dead_here, lease_host

ENQUEUE = "tuning.tasks.run_tuning_job_task.delay"


@pytest.mark.django_db
def test_all_digit_searcher_ids_are_numbered_in_registration_order_not_read_as_indexes():
    job = TuningJobFactory()
    for ray_trial_id in ("76787695", "1f3a9c02", "18553323"):
        services.trial_register(job_id=job.pk, ray_trial_id=ray_trial_id, hyperparameters={})
    numbers = dict(Trial.objects.filter(job=job).values_list("ray_trial_id", "number"))
    assert numbers == {"76787695": 1, "1f3a9c02": 2, "18553323": 3}


@pytest.mark.django_db
def test_indexed_trial_ids_give_their_index_whatever_the_registration_order():
    job = TuningJobFactory()
    for ray_trial_id in ("a1b2c_00002", "a1b2c_00000", "a1b2c_00001"):
        services.trial_register(job_id=job.pk, ray_trial_id=ray_trial_id, hyperparameters={})
    # Registered again (a restored experiment replays them): same rows, same numbers.
    services.trial_register(job_id=job.pk, ray_trial_id="a1b2c_00002", hyperparameters={})
    numbers = dict(Trial.objects.filter(job=job).values_list("ray_trial_id", "number"))
    assert numbers == {"a1b2c_00000": 1, "a1b2c_00001": 2, "a1b2c_00002": 3}


def test_searcher_trials_get_indexed_ids_that_continue_after_a_state_restore():
    from ray import tune
    from ray.tune.search import Searcher

    from tuning.raytune.search import IndexedSearchGenerator

    class Fixed(Searcher):
        def suggest(self, trial_id):
            return {"x": 0.5}

    def trainable(config):
        return None

    def generator() -> IndexedSearchGenerator:
        search = IndexedSearchGenerator(Fixed(metric="score", mode="max"))
        search.add_configurations({"exp": {"run": tune.with_parameters(trainable), "num_samples": 5}})
        return search

    before = generator()
    ids = [before.next_trial().trial_id for _ in range(2)]
    assert ids == [f"{before.id_prefix}00000", f"{before.id_prefix}00001"]
    state = before.get_state()
    before.next_trial()  # created after the saved state: lost with a killed driver

    after = generator()
    after.set_state(state)
    assert after.next_trial().trial_id == f"{before.id_prefix}00002"  # the lost trial's id again


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lease_holder_is_dead_only_for_a_gone_process_of_this_host():
    dead = _dead_pid()
    assert lease_holder_is_dead_here(f"{lease_host()}:{dead}:abc")
    assert not lease_holder_is_dead_here(f"{lease_host()}:{os.getppid()}:abc")  # alive
    assert not lease_holder_is_dead_here(f"{lease_host()}:{os.getpid()}:abc")  # this process
    assert not lease_holder_is_dead_here(f"elsewhere-{lease_host()}:{dead}:abc")  # another host
    assert not lease_holder_is_dead_here("reaper")


@pytest.mark.django_db(transaction=True)
def test_a_starting_worker_takes_back_at_once_only_the_jobs_of_dead_drivers_of_its_host():
    dead = _dead_pid()
    lease = {"status": TuningJob.Status.RUNNING, "attempts": 1, "started_at": timezone.now()}
    lease["lease_expires_at"] = timezone.now() + timedelta(hours=1)  # far from expiry
    orphan = TuningJobFactory(lease_owner=f"{lease_host()}:{dead}:abc", **lease)
    alive = TuningJobFactory(lease_owner=f"{lease_host()}:{os.getppid()}:abc", **lease)
    remote = TuningJobFactory(lease_owner=f"elsewhere:{dead}:abc", **lease)

    with mock.patch(ENQUEUE) as enqueue:
        taken = services.tuning_jobs_reclaim_from_dead_local_workers()

    assert taken == [orphan.pk]
    enqueue.assert_called_once_with(orphan.pk)
    orphan.refresh_from_db()
    assert orphan.status == TuningJob.Status.QUEUED and "no longer exists on this host" in orphan.error_message
    assert TuningJob.objects.get(pk=alive.pk).status == TuningJob.Status.RUNNING
    assert TuningJob.objects.get(pk=remote.pk).status == TuningJob.Status.RUNNING


@pytest.mark.django_db(transaction=True)
def test_a_trial_handed_again_after_its_run_succeeded_gives_tune_the_runs_last_result():
    # A restored experiment hands a trial that finished after the last state save to its trial
    # function again: its run is not executed again, and Tune gets the run's last stored result
    # (with no metric Tune failed the whole experiment: "did not include the specified metric").
    from runs.models import MetricPoint, Run
    from tests.factories import RunFactory, TrialFactory
    from tuning.raytune.trainables import run_trial

    run = RunFactory(status=Run.Status.SUCCEEDED, attempts=1)
    for step in (1, 2, 3):
        MetricPoint.objects.create(run=run, step=step, values={"val_accuracy": step / 10})
    trial = TrialFactory(run=run, status=Trial.Status.SUCCEEDED)

    with (
        mock.patch("ray.tune.get_context") as context,
        mock.patch("ray.get_runtime_context") as runtime,
        mock.patch("ray.tune.report") as report,
    ):
        context.return_value.get_trial_id.return_value = trial.ray_trial_id
        runtime.return_value.get_node_id.return_value = "n" * 56
        run_trial({}, job_id=trial.job_id)

    report.assert_called_once_with({"val_accuracy": 0.3, "epoch": 3})
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED and run.attempts == 1  # not executed again
