"""Data written at the previous release's schema survives the migrations added since.

The database is migrated back to the previous release's state (runs 0001, tuning 0003, traces 0001;
every other app at its latest), filled through the historical models, migrated forward to the
latest migrations, and read back with the current models.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

PREVIOUS_RELEASE = [
    ("runs", "0001_initial"),
    ("tuning", "0003_job_retries_attempts"),
    ("traces", "0001_initial"),
]
OUR_APPS = {app for app, _ in PREVIOUS_RELEASE}

T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def latest_targets(executor: MigrationExecutor) -> list[tuple[str, str]]:
    return executor.loader.graph.leaf_nodes()


def previous_release_targets(executor: MigrationExecutor) -> list[tuple[str, str]]:
    others = [node for node in latest_targets(executor) if node[0] not in OUR_APPS]
    return others + PREVIOUS_RELEASE


def fill_previous_release(apps) -> dict:
    """Rows written through the previous release's (historical) models; returns their ids."""
    User = apps.get_model("auth", "User")
    TraceDataset = apps.get_model("traces", "TraceDataset")
    Run = apps.get_model("runs", "Run")
    MetricPoint = apps.get_model("runs", "MetricPoint")
    LogLine = apps.get_model("runs", "LogLine")
    Evaluation = apps.get_model("runs", "Evaluation")
    TuningJob = apps.get_model("tuning", "TuningJob")
    Trial = apps.get_model("tuning", "Trial")

    user = User.objects.create(username="alice", email="alice@example.com", password="!unusable")
    dataset = TraceDataset.objects.create(
        owner=user,
        name="math-traces",
        version=2,
        description="Grade-school math traces",
        content_hash="a" * 64,
        eval_fraction=0.25,
        train_count=3,
        eval_count=1,
        train_items=[
            {"prompt": "1+1", "answer": "2"},
            {"prompt": "2+2", "answer": "4"},
            {"prompt": "3+3", "answer": "6"},
        ],
        eval_items=[{"prompt": "4+4", "answer": "8"}],
        created_at=at(0),
    )
    run = Run.objects.create(
        owner=user,
        name="stand-alone",
        trainer="toy",
        dataset="traces:math-traces@2",
        hyperparameters={"learning_rate": 0.5, "epochs": 3},
        status="succeeded",
        output_dir="/data/runs/1",
        latest_metrics={"loss": 0.25, "accuracy": 0.75},
        last_step=3,
        log_lines_dropped=2,
        attempts=1,
        created_at=at(1),
        started_at=at(2),
        finished_at=at(3),
        heartbeat_at=at(3),
    )
    metric = MetricPoint.objects.create(run=run, step=3, values={"loss": 0.25}, recorded_at=at(3))
    log = LogLine.objects.create(run=run, seq=7, stream="stderr", text="epoch 3 done", created_at=at(3))
    evaluation = Evaluation.objects.create(
        run=run,
        metrics={"accuracy": 0.75},
        primary_metric="accuracy",
        primary_score=0.75,
        details=[{"prompt": "4+4", "correct": True}],
        created_at=at(4),
    )

    trial_run = Run.objects.create(
        owner=user,
        name="sweep / trial 0",
        trainer="toy",
        dataset="traces:math-traces@2",
        hyperparameters={"learning_rate": 0.125},
        status="succeeded",
        latest_metrics={"accuracy": 0.5},
        last_step=5,
        created_at=at(6),
        started_at=at(6),
        finished_at=at(8),
    )
    job = TuningJob.objects.create(
        owner=user,
        name="sweep",
        trainer="toy",
        dataset="traces:math-traces@2",
        fixed_hyperparameters={"epochs": 5},
        search_space={"learning_rate": {"type": "loguniform", "low": 0.001, "high": 1.0}},
        metric="accuracy",
        mode="max",
        num_samples=6,
        max_concurrent_trials=2,
        search_algorithm="optuna",
        scheduler="asha",
        time_budget_s=600,
        cpus_per_trial=0.5,
        gpus_per_trial=0.0,
        max_failed_trials=3,
        max_trial_retries=2,
        attempts=1,
        seed=42,
        status="cancelled",
        cancel_requested=True,
        error_message="Cancelled.",
        best_run=trial_run,
        best_hyperparameters={"learning_rate": 0.125},
        best_metric_value=0.5,
        experiment_path="/data/tuning/1",
        created_at=at(5),
        queued_at=at(5),
        started_at=at(6),
        finished_at=at(20),
    )
    trials = {}
    for number, (status, message, kwargs) in enumerate(
        [
            ("succeeded", "", {"run": trial_run, "latest_metric_value": 0.5, "best_metric_value": 0.5}),
            ("failed", "boom", {}),
            ("stopped", "", {"latest_metric_value": 0.25, "best_metric_value": 0.25}),
            ("cancelled", "Experiment ended: Worker lost 5 time(s) (the Ray cluster went away).", {}),
            ("cancelled", "Not finished within the job's time budget.", {}),
            ("cancelled", "Cancelled with the job.", {}),
        ]
    ):
        trials[number] = Trial.objects.create(
            job=job,
            ray_trial_id=f"trial_{number:05d}",
            number=number,
            hyperparameters={"learning_rate": 0.125 * (number + 1)},
            status=status,
            iterations=number + 1,
            error_message=message,
            created_at=at(6 + number),
            started_at=at(6 + number),
            finished_at=at(12 + number),
            **kwargs,
        ).pk
    return {
        "user": user.pk,
        "dataset": dataset.pk,
        "run": run.pk,
        "metric": metric.pk,
        "log": log.pk,
        "evaluation": evaluation.pk,
        "trial_run": trial_run.pk,
        "job": job.pk,
        "trials": trials,
    }


def check_latest(ids: dict) -> None:
    """Every row is there, read with the current models; the new trial field is filled in."""
    from django.contrib.auth import get_user_model

    from runs.models import Evaluation, LogLine, MetricPoint, Run
    from traces.models import TraceDataset
    from tuning.models import Trial, TuningJob

    user = get_user_model().objects.get(pk=ids["user"])
    assert (user.username, user.email, user.password) == ("alice", "alice@example.com", "!unusable")

    dataset = TraceDataset.objects.get(pk=ids["dataset"])
    assert dataset.owner_id == user.pk
    assert (dataset.name, dataset.version, dataset.description) == ("math-traces", 2, "Grade-school math traces")
    assert (dataset.content_hash, dataset.eval_fraction) == ("a" * 64, 0.25)
    assert (dataset.train_count, dataset.eval_count) == (3, 1)
    assert dataset.train_items[2] == {"prompt": "3+3", "answer": "6"} and len(dataset.train_items) == 3
    assert dataset.eval_items == [{"prompt": "4+4", "answer": "8"}]
    assert dataset.created_at == at(0)

    run = Run.objects.get(pk=ids["run"])
    assert run.owner_id == user.pk
    assert (run.name, run.trainer, run.dataset) == ("stand-alone", "toy", "traces:math-traces@2")
    assert run.hyperparameters == {"learning_rate": 0.5, "epochs": 3}
    assert (run.status, run.cancel_requested, run.error_message) == ("succeeded", False, "")
    assert (run.output_dir, run.latest_metrics) == ("/data/runs/1", {"loss": 0.25, "accuracy": 0.75})
    assert (run.last_step, run.log_lines_dropped, run.attempts) == (3, 2, 1)
    assert (run.created_at, run.started_at, run.finished_at, run.heartbeat_at) == (at(1), at(2), at(3), at(3))
    assert not Trial.objects.filter(run=run).exists()

    metric = MetricPoint.objects.get(pk=ids["metric"])
    assert (metric.run_id, metric.step, metric.values, metric.recorded_at) == (run.pk, 3, {"loss": 0.25}, at(3))
    log = LogLine.objects.get(pk=ids["log"])
    assert (log.run_id, log.seq, log.stream, log.text, log.created_at) == (run.pk, 7, "stderr", "epoch 3 done", at(3))
    evaluation = Evaluation.objects.get(pk=ids["evaluation"])
    assert evaluation.run_id == run.pk
    assert (evaluation.metrics, evaluation.primary_metric, evaluation.primary_score) == (
        {"accuracy": 0.75},
        "accuracy",
        0.75,
    )
    assert (evaluation.details, evaluation.created_at) == ([{"prompt": "4+4", "correct": True}], at(4))
    assert run.evaluation.pk == evaluation.pk
    assert list(run.metric_points.values_list("pk", flat=True)) == [metric.pk]
    assert list(run.log_lines.values_list("pk", flat=True)) == [log.pk]

    job = TuningJob.objects.get(pk=ids["job"])
    assert job.owner_id == user.pk
    assert (job.name, job.trainer, job.dataset, job.metric, job.mode) == (
        "sweep",
        "toy",
        "traces:math-traces@2",
        "accuracy",
        "max",
    )
    assert job.fixed_hyperparameters == {"epochs": 5}
    assert job.search_space == {"learning_rate": {"type": "loguniform", "low": 0.001, "high": 1.0}}
    assert (job.num_samples, job.max_concurrent_trials, job.search_algorithm, job.scheduler) == (6, 2, "optuna", "asha")
    assert (job.time_budget_s, job.cpus_per_trial, job.gpus_per_trial) == (600, 0.5, 0.0)
    assert (job.max_failed_trials, job.max_trial_retries, job.attempts, job.seed) == (3, 2, 1, 42)
    assert (job.status, job.cancel_requested, job.error_message) == ("cancelled", True, "Cancelled.")
    assert job.cancelled_by_id is None  # new field: unknown for jobs cancelled before it existed
    assert job.best_run_id == ids["trial_run"]
    assert (job.best_hyperparameters, job.best_metric_value) == ({"learning_rate": 0.125}, 0.5)
    assert job.experiment_path == "/data/tuning/1"
    assert (job.created_at, job.queued_at, job.started_at, job.finished_at) == (at(5), at(5), at(6), at(20))
    assert job.trials.count() == 6

    expected = {
        0: ("succeeded", "", "finished"),
        1: ("failed", "boom", "failed"),
        2: ("stopped", "", "stopped_early"),
        3: ("cancelled", "Experiment ended: Worker lost 5 time(s) (the Ray cluster went away).", "interrupted"),
        4: ("cancelled", "Not finished within the job's time budget.", "time_budget"),
        5: ("cancelled", "Cancelled with the job.", "cancelled"),
    }
    for number, pk in ids["trials"].items():
        trial = Trial.objects.get(pk=pk)
        assert (trial.status, trial.error_message, trial.end_reason) == expected[number], number
        assert (trial.job_id, trial.number, trial.ray_trial_id) == (job.pk, number, f"trial_{number:05d}")
        assert trial.hyperparameters == {"learning_rate": 0.125 * (number + 1)}
        assert trial.iterations == number + 1
        assert (trial.created_at, trial.started_at, trial.finished_at) == (
            at(6 + number),
            at(6 + number),
            at(12 + number),
        )
        assert trial.run_id == (ids["trial_run"] if number == 0 else None)
        assert (trial.latest_metric_value, trial.best_metric_value) == {0: (0.5, 0.5), 2: (0.25, 0.25)}.get(
            number, (None, None)
        )
    assert Trial.objects.get(pk=ids["trials"][0]).run.pk == ids["trial_run"]


@pytest.mark.django_db(transaction=True)
def test_previous_release_data_survives_migrations_and_trials_get_end_reasons():
    executor = MigrationExecutor(connection)
    old_targets = previous_release_targets(executor)
    try:
        executor.migrate(old_targets)
        executor.loader.build_graph()
        old_apps = executor.loader.project_state(old_targets).apps
        assert not any(f.name == "end_reason" for f in old_apps.get_model("tuning", "Trial")._meta.get_fields())
        ids = fill_previous_release(old_apps)

        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(latest_targets(executor))

        check_latest(ids)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(latest_targets(executor))
