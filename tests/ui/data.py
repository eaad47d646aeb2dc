"""Bulk builders of realistic job data for page tests and the page benchmark."""

from __future__ import annotations

import datetime
import random

from django.utils import timezone

from runs.models import Evaluation, LogLine, MetricPoint, Run
from tuning.models import Trial, TuningJob

SEARCH_SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
    "batch_size": {"type": "choice", "values": [16, 32, 64]},
}


def job_with_trials(
    owner,
    n: int,
    *,
    status: str = TuningJob.Status.RUNNING,
    epochs: int = 5,
    running: int = 2,
    seed: int = 0,
    name: str = "sweep",
) -> TuningJob:
    """A job with `n` trials (the last `running` still running), each with a run, an evaluation
    when succeeded and `epochs` metric points. Written with bulk inserts (10,000 trials in seconds)."""
    rng = random.Random(seed)
    now = timezone.now()
    start = now - datetime.timedelta(seconds=10 * n + 60)
    job = TuningJob.objects.create(
        owner=owner,
        name=name,
        trainer="sklearn-mlp",
        dataset="digits",
        metric="val_accuracy",
        mode=TuningJob.Mode.MAX,
        search_space=SEARCH_SPACE,
        fixed_hyperparameters={"epochs": epochs},
        num_samples=max(n, 1),
        max_concurrent_trials=2,
        status=status,
        started_at=start if status != TuningJob.Status.CREATED else None,
        queued_at=start if status != TuningJob.Status.CREATED else None,
        finished_at=now if status in TuningJob.TERMINAL_STATUSES else None,
    )
    runs, trials, points = [], [], []
    for i in range(n):
        is_running = status == TuningJob.Status.RUNNING and i >= n - running
        hp = {"learning_rate": 10 ** rng.uniform(-4, -1), "batch_size": rng.choice([16, 32, 64]), "epochs": epochs}
        begun = start + datetime.timedelta(seconds=10 * i)
        runs.append(
            Run(
                owner=owner,
                trainer="sklearn-mlp",
                dataset="digits",
                hyperparameters=hp,
                status=Run.Status.RUNNING if is_running else Run.Status.SUCCEEDED,
                started_at=begun,
                finished_at=None if is_running else begun + datetime.timedelta(seconds=8),
                last_step=epochs,
            )
        )
    runs = Run.objects.bulk_create(runs, batch_size=2000)  # sets primary keys (PostgreSQL, SQLite >= 3.35)
    evaluations = []
    for i, run in enumerate(runs):
        is_running = run.status == Run.Status.RUNNING
        final = 0.5 + 0.45 * rng.random()
        curve = [final * (1 - 0.5 ** (e + 1)) for e in range(epochs)]
        for e, value in enumerate(curve, start=1):
            points.append(
                MetricPoint(
                    run=run, step=e, values={"val_accuracy": value, "val_loss": 2 - value, "train_loss": 2.1 - value}
                )
            )
        if not is_running:
            evaluations.append(
                Evaluation(run=run, metrics={"accuracy": final}, primary_metric="accuracy", primary_score=final)
            )
        trials.append(
            Trial(
                job=job,
                ray_trial_id=f"t{job.pk}_{i:05d}",
                number=i + 1,
                hyperparameters=run.hyperparameters,
                status=Trial.Status.RUNNING if is_running else Trial.Status.SUCCEEDED,
                run=run,
                latest_metric_value=curve[-1],
                best_metric_value=max(curve),
                iterations=epochs,
                started_at=run.started_at,
                finished_at=run.finished_at,
            )
        )
    MetricPoint.objects.bulk_create(points, batch_size=5000)
    Evaluation.objects.bulk_create(evaluations, batch_size=2000)
    Trial.objects.bulk_create(trials, batch_size=2000)
    best = Trial.objects.best(job.mode).filter(job=job).first()
    if best is not None:
        TuningJob.objects.filter(pk=job.pk).update(best_metric_value=best.best_metric_value, best_run=best.run)
        job.refresh_from_db()
    return job


def run_with_logs(owner, *, status: str = Run.Status.SUCCEEDED, lines: int = 30, details: int = 3) -> Run:
    now = timezone.now()
    run = Run.objects.create(
        owner=owner,
        trainer="sklearn-mlp",
        dataset="digits",
        hyperparameters={"learning_rate": 0.001, "batch_size": 32},
        status=status,
        started_at=now - datetime.timedelta(minutes=2),
        finished_at=now if status in Run.TERMINAL_STATUSES else None,
        latest_metrics={"val_accuracy": 0.9},
        last_step=3,
    )
    MetricPoint.objects.bulk_create(
        [MetricPoint(run=run, step=s, values={"val_accuracy": 0.3 * s, "val_loss": 1.0 / s}) for s in (1, 2, 3)]
    )
    LogLine.objects.bulk_create([LogLine(run=run, seq=i, text=f"epoch {i}: line") for i in range(1, lines + 1)])
    if status == Run.Status.SUCCEEDED:
        Evaluation.objects.create(
            run=run,
            metrics={"accuracy": 0.91, "exact_match": 0.5},
            primary_metric="accuracy",
            primary_score=0.91,
            details=[
                {"question": f"What is {i}+{i}?", "expected": str(2 * i), "predicted": str(2 * i)}
                for i in range(details)
            ],
        )
    return run
