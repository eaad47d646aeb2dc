"""End to end: API → Celery worker on Redis → Ray Tune → database. Tiny trials; one Ray for the
session (started inside the shared `celery_worker`)."""

from __future__ import annotations

import os
import time

import psutil
import pytest
from django.conf import settings

from runs.models import Run
from tests.conftest import wait_for
from tuning.models import Trial, TuningJob
from tuning.tasks import run_tuning_job_task

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOBS = "/api/tuning/jobs/"


def start_job(api_client, **data) -> TuningJob:
    data = {"name": "integration", "trainer": "sklearn-mlp", "dataset": "digits", **data}
    created = api_client.post(JOBS, data, format="json")
    assert created.status_code == 201, created.content
    started = api_client.post(f"{JOBS}{created.json()['id']}/start/")
    assert started.status_code == 202, started.content
    return TuningJob.objects.get(pk=created.json()["id"])


def wait_until_finished(job: TuningJob, timeout: float = 90) -> TuningJob:
    wait_for(lambda: TuningJob.objects.get(pk=job.pk).is_terminal, timeout=timeout, message=f"job {job.pk} to end")
    return TuningJob.objects.get(pk=job.pk)


def trainer_processes(worker) -> list[psutil.Process]:
    """Ray trial actors (the processes that run trainers) under the worker's process tree."""
    found = []
    for proc in psutil.Process(worker.proc.pid).children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(proc.cmdline()) or "ImplicitFunc" in proc.name():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_job_succeeds_with_every_trial_a_tracked_evaluated_run(celery_worker, api_client):
    job = start_job(
        api_client,
        search_space={
            "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "batch_size": {"type": "choice", "values": [16, 64]},
        },
        fixed_hyperparameters={"epochs": 3, "epoch_delay_s": 0.3},
        num_samples=4,
        max_concurrent_trials=2,
        seed=3,
    )

    def live_trial():  # a trial with per-epoch metrics written while the job still runs
        return Trial.objects.filter(
            job=job, job__status=TuningJob.Status.RUNNING, status=Trial.Status.RUNNING, run__metric_points__isnull=False
        ).exists()

    wait_for(live_trial, timeout=60, interval=0.1, message="a running trial with metrics while the job runs")
    job = wait_until_finished(job)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    trials = list(Trial.objects.filter(job=job).select_related("run", "run__evaluation"))
    assert len(trials) == 4
    assert sorted(t.number for t in trials) == [1, 2, 3, 4]
    for trial in trials:
        assert trial.status == Trial.Status.SUCCEEDED, trial.error_message
        run = trial.run
        assert run.status == Run.Status.SUCCEEDED and run.owner_id == job.owner_id and run.trainer == job.trainer
        assert run.hyperparameters["epochs"] == 3
        assert run.hyperparameters["batch_size"] == trial.hyperparameters["batch_size"] in (16, 64)
        assert 1e-4 <= trial.hyperparameters["learning_rate"] <= 1e-1
        assert list(run.metric_points.values_list("step", flat=True)) == [1, 2, 3]
        assert run.evaluation.primary_metric == "accuracy"
        assert trial.iterations == 3
        best_epoch = max(p.values["val_accuracy"] for p in run.metric_points.all())
        assert trial.best_metric_value == pytest.approx(best_epoch)
    best = max(trials, key=lambda t: t.best_metric_value)
    assert job.best_run_id == best.run_id and job.best_metric_value == pytest.approx(best.best_metric_value)
    assert job.best_hyperparameters == best.hyperparameters
    assert os.path.isdir(job.experiment_path) and job.experiment_path.startswith(str(settings.DATA_DIR))

    body = api_client.get(f"{JOBS}{job.pk}/").json()
    assert body["progress"]["succeeded"] == 4 and body["best_run"]["id"] == best.run_id
    assert body["best_run"]["primary_score"] == best.run.evaluation.primary_score


def test_asha_stops_poor_trials_early(celery_worker, api_client):
    job = start_job(
        api_client,
        search_space={"learning_rate": {"type": "grid", "values": [0.05, 0.02, 1e-6, 2e-6]}},
        fixed_hyperparameters={"epochs": 4},
        search_algorithm="grid",
        num_samples=1,
        scheduler="asha",
        max_concurrent_trials=1,
    )
    job = wait_until_finished(job)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    trials = {t.hyperparameters["learning_rate"]: t for t in Trial.objects.filter(job=job).select_related("run")}
    assert len(trials) == 4
    for lr in (1e-6, 2e-6):
        trial = trials[lr]
        assert trial.status == Trial.Status.STOPPED
        assert trial.iterations < 4
        assert "Stopped early by the ASHA scheduler" in trial.error_message
        assert trial.end_reason == Trial.EndReason.STOPPED_EARLY
        # Stopping early is a normal outcome: the run says so and keeps its metrics, but is never
        # the best run.
        assert trial.run.status == Run.Status.STOPPED, trial.run.error_message
        assert trial.run.metric_points.count() == trial.iterations
        assert job.best_run_id != trial.run_id
    # sklearn-mlp evaluates the model it has: a trial stopped while the experiment goes on is
    # evaluated on held-out data. (The last trial's run may be cut off by the experiment's end: it
    # then says so, unevaluated.)
    assert Run.objects.filter(pk=trials[1e-6].run_id, evaluation__isnull=False).exists()
    last = trials[2e-6].run
    assert hasattr(last, "evaluation") or "before this run could be evaluated" in last.error_message
    assert trials[0.05].status == Trial.Status.SUCCEEDED
    assert job.best_run_id in {t.run_id for t in trials.values() if t.status == Trial.Status.SUCCEEDED}


def test_optuna_job_completes(celery_worker, api_client):
    job = start_job(
        api_client,
        search_space={
            "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
            "hidden_units": {"type": "int", "low": 16, "high": 64, "step": 16},
        },
        fixed_hyperparameters={"epochs": 2},
        search_algorithm="optuna",
        num_samples=4,
        max_concurrent_trials=2,
        seed=0,
    )
    job = wait_until_finished(job)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    trials = Trial.objects.filter(job=job)
    assert trials.count() == 4
    assert all(t.status == Trial.Status.SUCCEEDED for t in trials)
    assert {t.hyperparameters["hidden_units"] for t in trials} <= {16, 32, 48, 64}
    assert job.best_run_id is not None


def test_a_raising_trial_is_failed_while_the_others_finish(celery_worker, api_client):
    job = start_job(
        api_client,
        trainer="test-quick",
        dataset="none",
        search_space={"x": {"type": "grid", "values": [0.2, 0.8]}, "fail_at_epoch": {"type": "grid", "values": [0, 2]}},
        search_algorithm="grid",
        num_samples=1,
        max_concurrent_trials=2,
    )
    job = wait_until_finished(job)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    trials = list(Trial.objects.filter(job=job).select_related("run"))
    failed = [t for t in trials if t.hyperparameters["fail_at_epoch"] == 2]
    finished = [t for t in trials if t.hyperparameters["fail_at_epoch"] == 0]
    assert len(failed) == 2 and len(finished) == 2
    for trial in failed:
        assert trial.status == Trial.Status.FAILED
        assert "ValueError: boom at epoch 2" in trial.error_message
        assert trial.run.status == Run.Status.FAILED and "boom" in trial.run.error_message
        assert trial.run.metric_points.count() == 1
    for trial in finished:
        assert trial.status == Trial.Status.SUCCEEDED and trial.run.status == Run.Status.SUCCEEDED
    # The best trial failed had it not raised (x=0.8 with fail_at_epoch=2): the best is a succeeded one.
    best = next(t for t in finished if t.hyperparameters["x"] == 0.8)
    assert job.best_run_id == best.run_id and job.best_metric_value == pytest.approx(0.8)


def test_job_whose_trials_all_fail_fails_with_the_reason(celery_worker, api_client):
    job = start_job(
        api_client,
        trainer="test-quick",
        dataset="none",
        search_space={"x": {"type": "grid", "values": [0.1, 0.2]}},
        fixed_hyperparameters={"fail_at_epoch": 1},
        search_algorithm="grid",
        num_samples=1,
    )
    job = wait_until_finished(job)

    assert job.status == TuningJob.Status.FAILED
    assert "All 2 trials failed" in job.error_message and "boom at epoch 1" in job.error_message
    assert job.best_run_id is None


def test_start_twice_is_409_and_runs_one_experiment(celery_worker, api_client):
    job = start_job(
        api_client,
        trainer="test-quick",
        dataset="none",
        search_space={"x": {"type": "uniform", "low": 0, "high": 1}},
        num_samples=2,
        seed=1,
    )
    assert api_client.post(f"{JOBS}{job.pk}/start/").status_code == 409
    run_tuning_job_task.delay(job.pk)  # a duplicate delivery of the task: claimed once only
    job = wait_until_finished(job)
    # The solo worker takes the duplicate after the job: wait until it has refused it.
    refused = f"tuning job {job.pk} is not queued; not running it"
    wait_for(lambda: refused in celery_worker.log_path.read_text(errors="replace"), message="the duplicate refused")

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    assert Trial.objects.filter(job=job).count() == 2
    assert Run.objects.filter(trial__job=job).count() == 2
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.SUCCEEDED


# "Within seconds" (the API says so): the stopper polls every 0.5 s. The bound leaves a margin for a
# loaded 2-core machine; without a cancel the job would train for minutes.
CANCEL_BOUND_S = 30


def test_cancel_running_job_ends_it_within_seconds_with_no_trainer_left(celery_worker, api_client):
    job = start_job(
        api_client,
        search_space={"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-1}},
        fixed_hyperparameters={"epochs": 200, "epoch_delay_s": 0.2},
        num_samples=4,
        max_concurrent_trials=2,
    )
    wait_for(
        lambda: Run.objects.filter(trial__job=job, status=Run.Status.RUNNING, metric_points__isnull=False).count() >= 2,
        timeout=60,
        message="two trials training",
    )
    assert trainer_processes(celery_worker)

    cancelled_at = time.monotonic()
    response = api_client.post(f"{JOBS}{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    wait_for(
        lambda: TuningJob.objects.get(pk=job.pk).is_terminal, timeout=CANCEL_BOUND_S, interval=0.1, message="the cancel"
    )
    wait_for(
        lambda: not trainer_processes(celery_worker),
        timeout=max(0.5, CANCEL_BOUND_S - (time.monotonic() - cancelled_at)),
        interval=0.1,
        message="no trainer process left",
    )

    print(f"cancel: job terminal and no trainer process left {time.monotonic() - cancelled_at:.2f} s after the request")
    job.refresh_from_db()
    assert job.status == TuningJob.Status.CANCELLED
    trials = list(Trial.objects.filter(job=job).select_related("run"))
    assert trials and all(t.status == Trial.Status.CANCELLED for t in trials)
    assert all(t.run is None or t.run.status == Run.Status.CANCELLED for t in trials)
    assert not Run.objects.filter(trial__job=job, status__in=Run.ACTIVE_STATUSES).exists()


def test_median_stopping_rule_stops_poor_trials(celery_worker, api_client):
    job = start_job(
        api_client,
        trainer="test-quick",
        dataset="none",
        search_space={"x": {"type": "grid", "values": [0.9, 0.8, 0.05, 0.02]}},
        fixed_hyperparameters={"epochs": 4, "epoch_delay_s": 0.06},
        search_algorithm="grid",
        num_samples=1,
        scheduler="median",
    )
    job = wait_until_finished(job)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    trials = {t.hyperparameters["x"]: t for t in Trial.objects.filter(job=job).select_related("run")}
    assert trials[0.9].status == Trial.Status.SUCCEEDED
    stopped = [t for t in trials.values() if t.status == Trial.Status.STOPPED]
    assert stopped and all(t.hyperparameters["x"] < 0.1 for t in stopped)
    assert all("median stopping rule" in t.error_message and t.run.status == Run.Status.STOPPED for t in stopped)
    # test-quick cannot evaluate a partly trained model: its stopped runs say so, unevaluated.
    assert all("cannot evaluate" in t.run.error_message and not hasattr(t.run, "evaluation") for t in stopped)


def test_time_budget_ends_the_experiment_and_keeps_finished_trials(celery_worker, api_client):
    job = start_job(
        api_client,
        trainer="test-quick",
        dataset="none",
        # The long trial would take 100000 x 5 ms = 500 s: only the budget can end it within the bound.
        search_space={"epochs": {"type": "grid", "values": [1, 100_000]}},
        fixed_hyperparameters={"epoch_delay_s": 0.005},
        search_algorithm="grid",
        num_samples=1,
        time_budget_s=6,
    )
    job = wait_until_finished(job, timeout=120)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    short, long = (Trial.objects.select_related("run").get(job=job, hyperparameters__epochs=n) for n in (1, 100_000))
    assert short.status == Trial.Status.SUCCEEDED and job.best_run_id == short.run_id
    assert long.status in (Trial.Status.STOPPED, Trial.Status.CANCELLED)
    assert long.run.status in (Run.Status.STOPPED, Run.Status.CANCELLED) and long.run.metric_points.exists()
    assert (job.finished_at - job.started_at).total_seconds() < 120  # a 6 s budget (+ a cold Ray), not 500 s


def test_too_many_failed_trials_stop_the_job(celery_worker, api_client):
    job = start_job(
        api_client,
        trainer="test-quick",
        dataset="none",
        search_space={"x": {"type": "grid", "values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}},
        fixed_hyperparameters={"fail_at_epoch": 3, "epoch_delay_s": 0.25},
        search_algorithm="grid",
        num_samples=1,
        max_failed_trials=1,
    )
    job = wait_until_finished(job)

    assert job.status == TuningJob.Status.FAILED
    assert "more than max_failed_trials=1" in job.error_message
    statuses = list(Trial.objects.filter(job=job).values_list("status", flat=True))
    assert 2 <= statuses.count(Trial.Status.FAILED) < 8
    assert Trial.Status.RUNNING not in statuses and Trial.Status.PENDING not in statuses
