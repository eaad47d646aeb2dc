from __future__ import annotations

import pytest

from runs.models import Evaluation, MetricPoint
from tests.factories import RunFactory, TrialFactory, TuningJobFactory
from tuning import selectors
from tuning.models import Trial, TuningJob
from tunix_rt.exceptions import ValidationError


def make_job(user, statuses, mode="max"):
    job = TuningJobFactory(owner=user, mode=mode)
    for i, status in enumerate(statuses, start=1):
        run = RunFactory(owner=user)
        Evaluation.objects.create(run=run, metrics={"accuracy": 0.5}, primary_metric="accuracy", primary_score=0.5)
        MetricPoint.objects.bulk_create([MetricPoint(run=run, step=s, values={"val_accuracy": s / 10}) for s in (1, 2)])
        TrialFactory(
            job=job,
            number=i,
            status=status,
            run=run,
            best_metric_value=None if status == Trial.Status.PENDING else i / 10,
        )
    return job


@pytest.mark.django_db
def test_progress_counts_for_a_page_of_jobs_in_one_query(user, django_assert_num_queries):
    S = Trial.Status
    make_job(user, [S.SUCCEEDED, S.FAILED, S.RUNNING])
    make_job(user, [S.STOPPED, S.CANCELLED, S.PENDING, S.SUCCEEDED, S.SUCCEEDED])
    for _ in range(3):
        make_job(user, [S.SUCCEEDED] * 4)
    with django_assert_num_queries(1):
        jobs = list(selectors.tuning_jobs_with_progress(TuningJob.objects.order_by("id")))
        progress = [selectors.job_progress(job) for job in jobs]
        [job.best_run for job in jobs]
    assert progress[0] == {
        "total": 3,
        "done": 2,
        "succeeded": 1,
        "failed": 1,
        "stopped": 0,
        "cancelled": 0,
        "running": 1,
        "pending": 0,
    }
    assert progress[1] == {
        "total": 5,
        "done": 4,
        "succeeded": 2,
        "failed": 0,
        "stopped": 1,
        "cancelled": 1,
        "running": 0,
        "pending": 1,
    }


@pytest.mark.django_db
def test_trials_table_costs_one_query_whatever_the_number_of_trials(user, django_assert_num_queries):
    job = make_job(user, [Trial.Status.SUCCEEDED] * 12)
    with django_assert_num_queries(1):
        rows = [(t.number, t.run.status, t.run.evaluation.primary_score) for t in selectors.trials_for_job(job)]
    assert len(rows) == 12


@pytest.mark.django_db
def test_metric_ordering_puts_the_best_first_for_the_job_mode(user):
    S = Trial.Status
    job = make_job(user, [S.SUCCEEDED, S.PENDING, S.SUCCEEDED, S.SUCCEEDED], mode="min")
    assert [t.number for t in selectors.trials_for_job(job, ordering="metric")] == [1, 3, 4, 2]
    assert [t.number for t in selectors.trials_for_job(job, ordering="-metric")] == [4, 3, 1, 2]
    assert [t.number for t in selectors.trials_for_job(job, ordering="-number")] == [4, 3, 2, 1]
    with pytest.raises(ValidationError):
        selectors.trials_for_job(job, ordering="owner__password")


@pytest.mark.django_db
def test_best_so_far_and_learning_curves_are_flat_reads(user, django_assert_num_queries):
    S = Trial.Status
    job = make_job(user, [S.FAILED, S.SUCCEEDED, S.SUCCEEDED, S.FAILED, S.SUCCEEDED])
    Trial.objects.filter(job=job, number=3).update(best_metric_value=0.05)
    with django_assert_num_queries(2):
        series = selectors.best_so_far_series(job)
        curves = selectors.learning_curves(job)
    assert [p["best_so_far"] for p in series] == [None, 0.2, 0.2, 0.2, 0.5]
    assert curves[1] == [(1, 0.1), (2, 0.2)] and len(curves) == 5
