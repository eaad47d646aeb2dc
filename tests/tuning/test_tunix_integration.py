"""A tuning job of real Tunix trials: services → Celery worker on Redis → Ray Tune → database."""

from __future__ import annotations

import pytest

from runs.models import Run
from tests.conftest import wait_for
from tuning import services as tuning_services
from tuning.models import Trial, TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


# Four real Tunix trainings, two at a time, on CPU: minutes on a loaded machine. The wait below must
# end (with its message) before pytest-timeout kills the test, so this test gets its own limit above
# the suite's 300 s (pyproject.toml).
JOB_WAIT_S = 420


@pytest.mark.timeout(JOB_WAIT_S + 120)
def test_tunix_job_best_run_is_the_one_with_the_best_held_out_accuracy(celery_worker, user):
    job = tuning_services.tuning_job_create(
        owner=user,
        name="tunix integration",
        trainer="tunix-sft",
        dataset="addition@1",
        search_space={"learning_rate": {"type": "grid", "values": [3e-4, 1e-3, 3e-3, 6e-3]}},
        # One report at the last step, so a trial's best accuracy is its final, evaluated one.
        fixed_hyperparameters={"max_steps": 250, "eval_interval": 250, "eval_items": 50},
        metric="accuracy",
        mode="max",
        search_algorithm="grid",
        num_samples=1,
        max_concurrent_trials=2,
        scheduler="fifo",
    )
    tuning_services.tuning_job_start(job=job)

    wait_for(
        lambda: TuningJob.objects.get(pk=job.pk).is_terminal, timeout=JOB_WAIT_S, interval=1, message="the job to end"
    )

    job.refresh_from_db()
    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    trials = list(Trial.objects.filter(job=job).select_related("run", "run__evaluation"))
    assert len(trials) == 4
    succeeded = [t for t in trials if t.status == Trial.Status.SUCCEEDED]
    assert len(succeeded) == 4, [t.error_message for t in trials]
    scores = {t.run_id: t.run.evaluation.primary_score for t in succeeded}
    for trial in succeeded:
        assert trial.run.status == Run.Status.SUCCEEDED and trial.run.trainer == "tunix-sft"
        assert trial.best_metric_value == pytest.approx(scores[trial.run_id])
        assert len(trial.run.evaluation.details) == 50
    assert max(scores.values()) > 0.1 + max(t.run.evaluation.metrics["majority_baseline"] for t in succeeded)
    assert scores[job.best_run_id] == max(scores.values())
    assert len(set(scores.values())) > 1, scores  # learning rates made a difference
