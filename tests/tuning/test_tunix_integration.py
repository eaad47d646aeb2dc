"""A demo-like tuning job of real Tunix trials: services → Celery worker on Redis → Ray Tune → database."""

from __future__ import annotations

import pytest

from runs.models import Run
from tests.conftest import wait_for
from tuning import services as tuning_services
from tuning.demo import DEMO_JOB
from tuning.models import Trial, TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


# A real Tunix training on CPU: minutes on a loaded machine. The wait below must end (with its
# message) before pytest-timeout kills the test, so this test gets its own limit above the suite's
# 300 s (pyproject.toml).
JOB_WAIT_S = 420


@pytest.mark.timeout(JOB_WAIT_S + 120)
def test_demo_like_job_hands_back_a_run_answering_95_percent_of_held_out_additions(celery_worker, user):
    """The demo's best trial, through the whole product."""
    # The demo's configuration (model, batch 64, ASHA on accuracy, so Tune runs with the scheduler's
    # own metric) cut to fit the suite's time: one trial at a rate from the demo's range instead of
    # four (a second trial halves each one's share of the 2 cores: 300 s were not enough), 500
    # steps instead of 600 (measured: 100 % of the 200 held-out items at step 500 for this rate and
    # seed; docs/tunix.md) and the first 100 held-out items.
    fixed = {**DEMO_JOB["fixed_hyperparameters"], "max_steps": 500, "eval_items": 100}
    job = tuning_services.tuning_job_create(
        owner=user,
        name="tunix demo-like",
        **{
            **DEMO_JOB,
            "search_space": {"learning_rate": {"type": "grid", "values": [3e-3]}},
            "fixed_hyperparameters": fixed,
            "search_algorithm": "grid",
            "num_samples": 1,
        },
    )
    tuning_services.tuning_job_start(job=job)

    wait_for(
        lambda: TuningJob.objects.get(pk=job.pk).is_terminal, timeout=JOB_WAIT_S, interval=1, message="the job to end"
    )

    job.refresh_from_db()
    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    [good] = Trial.objects.filter(job=job).select_related("run")
    assert good.status == Trial.Status.SUCCEEDED and good.run.status == Run.Status.SUCCEEDED
    evaluation = good.run.evaluation
    assert evaluation.primary_metric == "accuracy" and len(evaluation.details) == 100
    assert evaluation.primary_score >= 0.95, evaluation.metrics
    assert job.best_run_id == good.run_id and job.best_metric_value == pytest.approx(evaluation.primary_score)
    # Every report carries the early-stopping metric ASHA ranks accuracy jobs by.
    points = list(good.run.metric_points.order_by("step"))
    assert [p.step for p in points] == [100, 200, 300, 400, 500]
    assert all("answer_token_accuracy" in p.values for p in points)
