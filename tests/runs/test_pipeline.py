from __future__ import annotations

import pytest

from runs import services
from runs.execution import execute_run
from runs.models import Run
from tests.conftest import wait_for


@pytest.mark.django_db
def test_reference_trainer_run_succeeds_with_metrics_logs_and_evaluation(user):
    run = services.run_create(
        owner=user, trainer="sklearn-mlp", dataset="digits", hyperparameters={"epochs": 5}, enqueue=False
    )

    run = execute_run(run.pk)

    assert run.status == Run.Status.SUCCEEDED
    assert list(run.metric_points.values_list("step", flat=True)) == [1, 2, 3, 4, 5]
    assert run.evaluation.primary_metric == "accuracy"
    assert run.evaluation.primary_score > 0.8
    assert run.log_lines.filter(text__startswith="epoch 5:").exists()


@pytest.mark.django_db
def test_learning_rate_changes_the_result(user):
    scores = []
    for lr in (1e-5, 1e-2):
        run = services.run_create(
            owner=user,
            trainer="sklearn-mlp",
            dataset="digits",
            hyperparameters={"learning_rate": lr, "epochs": 5},
            enqueue=False,
        )
        scores.append(execute_run(run.pk).evaluation.primary_score)
    assert scores[1] - scores[0] > 0.2


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_run_executes_on_a_real_celery_worker(celery_worker, user):
    run = services.run_create(owner=user, trainer="sklearn-mlp", dataset="digits", hyperparameters={"epochs": 3})

    wait_for(lambda: Run.objects.get(pk=run.pk).is_terminal, timeout=60, message="the run to finish")

    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error_message
    assert run.metric_points.count() == 3
    assert run.evaluation.primary_score > 0.5


def _stopped_at(step: int):
    """An on_report hook standing in for Tune's scheduler: it stops the trial at `step`."""
    from runs.trainers.base import RunStoppedEarly

    def on_report(reported: int, metrics: dict) -> None:
        if reported >= step:
            raise RunStoppedEarly()

    return on_report


@pytest.mark.django_db
def test_a_run_stopped_early_keeps_its_metrics_and_is_evaluated_when_its_trainer_can(user):
    run = services.run_create(
        owner=user, trainer="sklearn-mlp", dataset="digits", hyperparameters={"epochs": 10}, enqueue=False
    )

    run = execute_run(run.pk, on_report=_stopped_at(3))

    assert run.status == Run.Status.STOPPED
    assert list(run.metric_points.values_list("step", flat=True)) == [1, 2, 3]
    assert run.evaluation.primary_metric == "accuracy" and run.evaluation.primary_score > 0.5
    assert run.log_lines.filter(text__startswith="stopped early by Ray Tune").exists()


@pytest.mark.django_db
def test_a_run_stopped_early_whose_trainer_cannot_evaluate_ends_stopped_without_evaluation(user):
    run = services.run_create(
        owner=user, trainer="quadratic", dataset="bowl", hyperparameters={"epochs": 50}, enqueue=False
    )

    run = execute_run(run.pk, on_report=_stopped_at(2))

    assert run.status == Run.Status.STOPPED and run.finished_at is not None
    assert "Stopped early by Ray Tune at step 2" in run.error_message
    assert not hasattr(run, "evaluation") and run.metric_points.exists()
