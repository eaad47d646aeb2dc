from __future__ import annotations

from unittest import mock

import pytest

from runs.models import Run
from tests.factories import RunFactory, TrialFactory, TuningJobFactory, UserFactory
from tuning import services
from tuning.models import Trial, TuningJob
from tuning.services import jobs
from tunix_rt.exceptions import InvalidTransition, ServiceUnavailable, ValidationError

SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
    "batch_size": {"type": "choice", "values": [16, 32]},
}


def create(user, **overrides):
    kwargs = {
        "owner": user,
        "name": "lr search",
        "trainer": "sklearn-mlp",
        "dataset": "digits",
        "search_space": SPACE,
        **overrides,
    }
    return services.tuning_job_create(**kwargs)


@pytest.mark.django_db
def test_create_defaults_metric_and_mode_from_the_trainer(user):
    job = create(user, fixed_hyperparameters={"epochs": 2}, num_samples=4)
    assert job.status == TuningJob.Status.CREATED
    assert (job.metric, job.mode) == ("val_accuracy", "max")
    assert job.fixed_hyperparameters == {"epochs": 2}
    assert job.search_space["batch_size"] == {"type": "choice", "values": [16, 32]}


@pytest.mark.django_db
def test_create_reports_every_bad_field_and_stores_nothing(user):
    with pytest.raises(ValidationError) as info:
        create(
            user,
            name="",
            dataset="mnist",
            metric="loss",
            num_samples=0,
            scheduler="hyperband",
            fixed_hyperparameters={"epochs": 0},
            search_space={"nope": {"type": "fixed", "value": 1}},
        )
    errors = info.value.as_dict()
    assert set(errors) == {
        "name",
        "dataset",
        "metric",
        "num_samples",
        "scheduler",
        "fixed_hyperparameters",
        "search_space",
    }
    assert "epochs" in errors["fixed_hyperparameters"] and "nope" in errors["search_space"]
    assert not TuningJob.objects.exists()


@pytest.mark.django_db
def test_start_queues_and_enqueues_after_commit(user, django_capture_on_commit_callbacks):
    job = create(user)
    with mock.patch("tuning.tasks.run_tuning_job_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            job = services.tuning_job_start(job=job)
        assert job.status == TuningJob.Status.QUEUED and job.queued_at is not None
        delay.assert_not_called()  # not before the transaction commits
        for callback in callbacks:
            callback()
    delay.assert_called_once_with(job.pk)


@pytest.mark.django_db
def test_start_twice_raises_invalid_transition(user, django_capture_on_commit_callbacks):
    job = create(user)
    with mock.patch("tuning.tasks.run_tuning_job_task.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            services.tuning_job_start(job=job)
        with pytest.raises(InvalidTransition), django_capture_on_commit_callbacks(execute=True):
            services.tuning_job_start(job=TuningJob.objects.get(pk=job.pk))
    assert delay.call_count == 1


@pytest.mark.django_db
def test_start_without_ray_is_unavailable_and_changes_nothing(user):
    job = create(user)
    real_find_spec = jobs.importlib.util.find_spec
    with mock.patch.object(
        jobs.importlib.util,
        "find_spec",
        side_effect=lambda name, *a: None if name == "ray" else real_find_spec(name, *a),
    ):
        with pytest.raises(ServiceUnavailable, match="Ray Tune is not installed"):
            services.tuning_job_start(job=job)
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.CREATED


@pytest.mark.django_db
def test_start_with_unreachable_broker_is_unavailable(user, settings):
    from tunix_rt.celery import app

    job = create(user)
    with mock.patch.object(app, "connection_for_write", side_effect=OSError("connection refused")):
        with pytest.raises(ServiceUnavailable, match="broker is unreachable"):
            services.tuning_job_start(job=job)
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.CREATED


@pytest.mark.django_db
def test_cancel_queued_job_is_immediate_and_terminal_job_cannot_be_cancelled(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.QUEUED)
    job = services.tuning_job_cancel(job=job)
    assert job.status == TuningJob.Status.CANCELLED and job.finished_at is not None
    with pytest.raises(InvalidTransition):
        services.tuning_job_cancel(job=job)


@pytest.mark.django_db
def test_cancel_running_job_flags_it_and_its_running_runs(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.RUNNING)
    running = TrialFactory(job=job, run=RunFactory(owner=user, status=Run.Status.RUNNING))
    finished = TrialFactory(job=job, run=RunFactory(owner=user, status=Run.Status.SUCCEEDED))
    job = services.tuning_job_cancel(job=job)
    assert job.status == TuningJob.Status.RUNNING and job.cancel_requested
    assert Run.objects.get(pk=running.run_id).cancel_requested
    assert not Run.objects.get(pk=finished.run_id).cancel_requested


@pytest.mark.django_db
def test_clone_copies_the_configuration_into_a_new_created_job(user):
    job = create(user, num_samples=3, scheduler="asha", seed=7, fixed_hyperparameters={"epochs": 3})
    TuningJob.objects.filter(pk=job.pk).update(status=TuningJob.Status.FAILED)
    other = UserFactory()
    copy = services.tuning_job_clone(job=job, owner=other)
    assert copy.pk != job.pk and copy.status == TuningJob.Status.CREATED and copy.owner == other
    assert copy.name == "lr search (copy)"
    for field in (
        "trainer",
        "dataset",
        "search_space",
        "fixed_hyperparameters",
        "num_samples",
        "scheduler",
        "seed",
        "metric",
        "mode",
    ):
        assert getattr(copy, field) == getattr(job, field)


@pytest.mark.django_db
def test_trial_results_are_idempotent_per_iteration(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.RUNNING)
    trial = services.trial_register(job_id=job.pk, ray_trial_id="abc_00002", hyperparameters={"alpha": 0.1})
    assert trial.number == 3
    services.trial_start(job_id=job.pk, ray_trial_id="abc_00002", hyperparameters={})
    for iteration, value in ((1, 0.5), (2, 0.7), (1, 0.1)):  # the last one is a replay
        services.trial_result_record(
            job_id=job.pk, ray_trial_id="abc_00002", iteration=iteration, value=value, mode="max"
        )
    trial.refresh_from_db()
    assert (trial.status, trial.iterations, trial.latest_metric_value, trial.best_metric_value) == (
        Trial.Status.RUNNING,
        2,
        0.7,
        0.7,
    )


@pytest.mark.django_db
def test_best_run_is_the_best_succeeded_trial_never_a_failed_one(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.RUNNING, mode="min")
    TrialFactory(job=job, status=Trial.Status.FAILED, best_metric_value=0.01, run=RunFactory(owner=user))
    good = TrialFactory(job=job, status=Trial.Status.SUCCEEDED, best_metric_value=0.2, run=RunFactory(owner=user))
    TrialFactory(job=job, status=Trial.Status.SUCCEEDED, best_metric_value=0.3, run=RunFactory(owner=user))
    services.tuning_job_best_update(job_id=job.pk)
    job.refresh_from_db()
    assert job.best_run_id == good.run_id and job.best_metric_value == 0.2


@pytest.mark.django_db
def test_finalize_fails_a_job_whose_trials_all_failed_with_the_reason(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.RUNNING)
    TrialFactory(job=job, status=Trial.Status.FAILED, error_message="ValueError: boom")
    job = services.tuning_job_finalize(job_id=job.pk)
    assert job.status == TuningJob.Status.FAILED
    assert "All 1 trials failed" in job.error_message and "boom" in job.error_message


@pytest.mark.django_db
def test_finalize_after_cancel_cancels_unfinished_trials_and_runs(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.RUNNING, cancel_requested=True)
    done = TrialFactory(
        job=job,
        status=Trial.Status.SUCCEEDED,
        best_metric_value=0.9,
        run=RunFactory(owner=user, status=Run.Status.SUCCEEDED),
    )
    running = TrialFactory(job=job, status=Trial.Status.RUNNING, run=RunFactory(owner=user, status=Run.Status.RUNNING))
    pending = TrialFactory(job=job, status=Trial.Status.PENDING)
    job = services.tuning_job_finalize(job_id=job.pk)
    assert job.status == TuningJob.Status.CANCELLED
    assert Trial.objects.get(pk=done.pk).status == Trial.Status.SUCCEEDED
    assert Trial.objects.get(pk=running.pk).status == Trial.Status.CANCELLED
    assert Trial.objects.get(pk=pending.pk).status == Trial.Status.CANCELLED
    assert Run.objects.get(pk=running.run_id).status == Run.Status.CANCELLED
    assert job.best_run_id == done.run_id


@pytest.mark.django_db
def test_finalize_after_an_interrupted_fit_is_not_success(user):
    # SIGINT makes Tune return from fit() normally: unfinished trials mean the job did not succeed.
    job = TuningJobFactory(owner=user, status=TuningJob.Status.RUNNING)
    TrialFactory(job=job, status=Trial.Status.SUCCEEDED, best_metric_value=0.9, run=RunFactory(owner=user))
    running = TrialFactory(job=job, status=Trial.Status.RUNNING, run=RunFactory(owner=user, status=Run.Status.RUNNING))
    job = services.tuning_job_finalize(job_id=job.pk)
    assert job.status == TuningJob.Status.FAILED and "interrupted" in job.error_message
    assert Trial.objects.get(pk=running.pk).status == Trial.Status.CANCELLED
    assert Run.objects.get(pk=running.run_id).status == Run.Status.CANCELLED


@pytest.mark.django_db
def test_scheduler_stop_ends_the_trial_stopped_and_leaves_its_run_to_end_itself(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.RUNNING, scheduler=TuningJob.Scheduler.ASHA)
    trial = TrialFactory(
        job=job, status=Trial.Status.RUNNING, iterations=2, run=RunFactory(owner=user, status=Run.Status.RUNNING)
    )
    trial = services.trial_complete(job_id=job.pk, ray_trial_id=trial.ray_trial_id, stopped_by="the ASHA scheduler")
    assert trial.status == Trial.Status.STOPPED and trial.end_reason == Trial.EndReason.STOPPED_EARLY
    assert trial.error_message == "Stopped early by the ASHA scheduler after 2 iteration(s)."
    assert trial.end_description == "Stopped early at step 2"
    # The trial process is evaluating the run it stopped: the driver does not cancel it.
    assert Run.objects.get(pk=trial.run_id).status == Run.Status.RUNNING
    # If the experiment ends first, the run is closed as stopped, unevaluated, never cancelled.
    services.tuning_job_finalize(job_id=job.pk)
    run = Run.objects.get(pk=trial.run_id)
    assert run.status == Run.Status.STOPPED and "before this run could be evaluated" in run.error_message
    assert run.finished_at is not None and not hasattr(run, "evaluation")
