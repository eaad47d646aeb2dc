"""Leases, heartbeats, the reaper, resume and enqueue failures, without workers (the real
fault-injection runs are in test_faults.py)."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from runs.models import Run
from tests.conftest import wait_for
from tests.factories import RunFactory, TrialFactory, TuningJobFactory
from tuning import services
from tuning.models import Trial, TuningJob
from tunix_rt.exceptions import InvalidTransition, ServiceUnavailable

JOBS = "/api/tuning/jobs/"
ENQUEUE = "tuning.tasks.run_tuning_job_task.delay"


def running_job(**fields) -> TuningJob:
    now = timezone.now()
    defaults = {
        "status": TuningJob.Status.RUNNING,
        "lease_owner": "host:1:abc",
        "lease_expires_at": now + timedelta(seconds=60),
        "heartbeat_at": now,
        "started_at": now,
        "attempts": 1,
        "experiment_path": "/tmp/nowhere/job-x",
    }
    return TuningJobFactory(**{**defaults, **fields})


@pytest.mark.django_db
def test_begin_takes_a_lease_once_and_counts_attempts():
    job = TuningJobFactory(status=TuningJob.Status.QUEUED)
    assert services.tuning_job_begin(job_id=job.pk, lease_owner="a", experiment_path="/x/job")
    assert not services.tuning_job_begin(job_id=job.pk, lease_owner="b", experiment_path="/x/job")
    job.refresh_from_db()
    assert (job.status, job.lease_owner, job.attempts) == (TuningJob.Status.RUNNING, "a", 1)
    assert job.lease_expires_at > timezone.now()


@pytest.mark.django_db
def test_heartbeat_renews_only_the_holders_lease():
    job = running_job(lease_expires_at=timezone.now())
    assert not services.tuning_job_heartbeat(job_id=job.pk, lease_owner="someone else")
    assert services.tuning_job_heartbeat(job_id=job.pk, lease_owner="host:1:abc")
    job.refresh_from_db()
    expected = timezone.now() + timedelta(seconds=settings.TUNIX_RT["STALE_AFTER_S"] - 5)
    assert job.lease_expires_at > expected


@pytest.mark.django_db
def test_reaper_leaves_a_job_with_a_live_lease_alone():
    job = running_job()
    with mock.patch(ENQUEUE) as enqueue:
        counts = services.stale_work_reap()
    assert counts["jobs_requeued"] == 0 and not enqueue.called
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.RUNNING


@pytest.mark.django_db(transaction=True)
def test_reaper_requeues_a_job_whose_lease_expired_and_resends_it():
    job = running_job(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with mock.patch(ENQUEUE) as enqueue:
        counts = services.stale_work_reap()
    assert counts["jobs_requeued"] == 1
    enqueue.assert_called_once_with(job.pk)
    job.refresh_from_db()
    assert job.status == TuningJob.Status.QUEUED and job.lease_owner == ""
    assert "stopped sending heartbeats" in job.error_message


@pytest.mark.django_db
def test_reaper_fails_a_job_lost_too_often_with_the_reason_and_ends_its_trials():
    job = running_job(
        lease_expires_at=timezone.now() - timedelta(seconds=1), attempts=settings.TUNIX_RT["MAX_JOB_ATTEMPTS"]
    )
    run = RunFactory(status=Run.Status.RUNNING, owner=job.owner)
    TrialFactory(job=job, status=Trial.Status.RUNNING, run=run)
    with mock.patch(ENQUEUE) as enqueue:
        counts = services.stale_work_reap()
    assert counts["jobs_failed"] == 1 and not enqueue.called
    job.refresh_from_db()
    assert job.status == TuningJob.Status.FAILED and "Worker lost" in job.error_message
    assert Trial.objects.get(job=job).status == Trial.Status.CANCELLED
    assert Run.objects.get(pk=run.pk).status == Run.Status.CANCELLED
    # Resumed later, the trial the lost worker was running runs again (Ray still has it unfinished).
    with mock.patch(ENQUEUE):
        services.tuning_job_resume(job=job)
    assert Trial.objects.get(job=job).status == Trial.Status.PENDING
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED


@pytest.mark.django_db
def test_reaper_fails_a_silent_standalone_run_but_not_a_live_one():
    old = timezone.now() - timedelta(seconds=settings.TUNIX_RT["STALE_AFTER_S"] + 5)
    silent = RunFactory(status=Run.Status.RUNNING, started_at=old, heartbeat_at=old)
    live = RunFactory(status=Run.Status.RUNNING, started_at=old, heartbeat_at=timezone.now())
    assert services.stale_work_reap()["runs_failed"] == 1
    silent.refresh_from_db()
    assert silent.status == Run.Status.FAILED and "no heartbeat" in silent.error_message
    assert Run.objects.get(pk=live.pk).status == Run.Status.RUNNING


@pytest.mark.django_db
def test_reaper_resends_a_job_queued_too_long_once_per_interval():
    queued_at = timezone.now() - timedelta(seconds=settings.TUNIX_RT["QUEUED_RESEND_AFTER_S"] + 1)
    job = TuningJobFactory(status=TuningJob.Status.QUEUED, queued_at=queued_at)
    with mock.patch(ENQUEUE) as enqueue:
        assert services.stale_work_reap()["jobs_resent"] == 1
        assert services.stale_work_reap()["jobs_resent"] == 0
    enqueue.assert_called_once_with(job.pk)


def test_reaper_runs_periodically_on_the_runs_queue():
    from tunix_rt.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["reap-stale-work"]
    assert entry["task"] == "tuning.tasks.reap_stale_work_task"
    assert entry["schedule"] == settings.TUNIX_RT["REAPER_INTERVAL_S"]
    assert app.amqp.router.route({}, entry["task"])["queue"].name == "runs"
    assert app.amqp.router.route({}, "tuning.tasks.run_tuning_job_task")["queue"].name == "tuning"


@pytest.mark.django_db
def test_requeue_by_the_reaper_needs_the_lease_to_have_expired():
    job = running_job()
    assert not services.tuning_job_requeue(
        job_id=job.pk, lease_owner=job.lease_owner, reason="x", expired_before=timezone.now()
    )
    assert services.tuning_job_requeue(job_id=job.pk, lease_owner=job.lease_owner, reason="shutting down")
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.QUEUED


@pytest.mark.django_db
def test_claiming_a_rerun_trial_resets_its_run_but_never_a_succeeded_one():
    job = running_job()
    failed_run = RunFactory(status=Run.Status.FAILED, owner=job.owner, error_message="boom", finished_at=timezone.now())
    done_run = RunFactory(status=Run.Status.SUCCEEDED, owner=job.owner, finished_at=timezone.now())
    TrialFactory(job=job, ray_trial_id="exp_00000", status=Trial.Status.RUNNING, run=failed_run)
    TrialFactory(job=job, ray_trial_id="exp_00001", status=Trial.Status.RUNNING, run=done_run)
    assert services.trial_run_claim(job_id=job.pk, ray_trial_id="exp_00000", sampled={}) == failed_run.pk
    assert services.trial_run_claim(job_id=job.pk, ray_trial_id="exp_00001", sampled={}) == done_run.pk
    failed_run.refresh_from_db()
    assert (failed_run.status, failed_run.error_message, failed_run.finished_at) == (Run.Status.QUEUED, "", None)
    assert Run.objects.get(pk=done_run.pk).status == Run.Status.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_start_whose_publish_fails_after_the_check_is_503_and_leaves_the_job_startable(api_client, user):
    job = TuningJobFactory(owner=user)
    with mock.patch(ENQUEUE, side_effect=ConnectionError("broker went away")):
        response = api_client.post(f"{JOBS}{job.pk}/start/")
    assert response.status_code == 503 and "broker failed while enqueueing" in response.json()["detail"]
    job.refresh_from_db()
    assert job.status == TuningJob.Status.CREATED and job.queued_at is None
    with mock.patch(ENQUEUE) as enqueue:
        assert api_client.post(f"{JOBS}{job.pk}/start/").status_code == 202
    enqueue.assert_called_once_with(job.pk)


@pytest.mark.django_db(transaction=True)
def test_resume_requeues_a_failed_job_and_resets_only_its_failed_trials(api_client, user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.FAILED, error_message="x", experiment_path="/e/job-1")
    failed_run = RunFactory(owner=user, status=Run.Status.FAILED, finished_at=timezone.now())
    ok_run = RunFactory(owner=user, status=Run.Status.SUCCEEDED, finished_at=timezone.now())
    failed = TrialFactory(job=job, status=Trial.Status.FAILED, run=failed_run, error_message="boom")
    kept = TrialFactory(job=job, status=Trial.Status.SUCCEEDED, run=ok_run)
    with mock.patch(ENQUEUE) as enqueue:
        response = api_client.post(f"{JOBS}{job.pk}/resume/")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    enqueue.assert_called_once_with(job.pk)
    assert Trial.objects.get(pk=failed.pk).status == Trial.Status.PENDING
    assert Run.objects.get(pk=failed_run.pk).status == Run.Status.QUEUED
    assert Trial.objects.get(pk=kept.pk).status == Trial.Status.SUCCEEDED
    assert Run.objects.get(pk=ok_run.pk).status == Run.Status.SUCCEEDED


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["created", "queued", "running", "succeeded"])
def test_resume_is_409_unless_failed_or_cancelled(api_client, user, status):
    job = TuningJobFactory(owner=user, status=status, experiment_path="/e/job")
    response = api_client.post(f"{JOBS}{job.pk}/resume/")
    assert response.status_code == 409 and "only a failed or cancelled job can be resumed" in response.json()["detail"]


@pytest.mark.django_db
def test_resume_of_a_job_that_never_ran_an_experiment_is_409(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.CANCELLED)
    with pytest.raises(InvalidTransition, match="clone it"):
        services.tuning_job_resume(job=job)


@pytest.mark.django_db
def test_resume_while_the_broker_is_down_is_503_and_changes_nothing(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.FAILED, experiment_path="/e/job")
    with mock.patch("tuning.services.jobs._check_can_run_experiments", side_effect=ServiceUnavailable("down")):
        with pytest.raises(ServiceUnavailable):
            services.tuning_job_resume(job=job)
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.FAILED


@pytest.mark.django_db
def test_page_resume_button_and_action(client, user):
    client.force_login(user)
    job = TuningJobFactory(owner=user, status=TuningJob.Status.FAILED, experiment_path="/e/job")
    resume_url = reverse("job_resume", args=[job.pk])
    assert resume_url in client.get(reverse("job_detail", args=[job.pk])).content.decode()
    with mock.patch(ENQUEUE):
        response = client.post(resume_url)
    assert response.status_code == 302
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.QUEUED
    assert resume_url not in client.get(reverse("job_detail", args=[job.pk])).content.decode()
    again = client.post(resume_url)
    assert again.status_code == 409


@pytest.mark.django_db
@pytest.mark.parametrize("value", [-1, 11, None, 1.5, "many"])
def test_max_trial_retries_is_validated_and_bounded(api_client, value):
    response = api_client.post(
        JOBS,
        {"name": "r", "trainer": "test-quick", "dataset": "none", "search_space": {}, "max_trial_retries": value},
        format="json",
    )
    assert response.status_code == 400 and "max_trial_retries" in response.json()


@pytest.mark.django_db
def test_max_trial_retries_is_stored_and_cloned(user):
    job = services.tuning_job_create(
        owner=user,
        name="r",
        trainer="test-quick",
        dataset="none",
        search_space={"x": {"type": "uniform", "low": 0, "high": 1}},
        max_trial_retries=3,
    )
    assert job.max_trial_retries == 3
    assert services.tuning_job_clone(job=job, owner=user).max_trial_retries == 3


@pytest.mark.django_db
def test_cancelling_a_requeued_job_ends_its_unfinished_trials_and_runs(user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.QUEUED, experiment_path="/e/job")
    run = RunFactory(owner=user, status=Run.Status.RUNNING)
    done_run = RunFactory(owner=user, status=Run.Status.SUCCEEDED, finished_at=timezone.now())
    unfinished = TrialFactory(job=job, status=Trial.Status.RUNNING, run=run)
    done = TrialFactory(job=job, status=Trial.Status.SUCCEEDED, run=done_run)
    services.tuning_job_cancel(job=job)
    assert Trial.objects.get(pk=unfinished.pk).status == Trial.Status.CANCELLED
    assert Run.objects.get(pk=run.pk).status == Run.Status.CANCELLED
    assert Trial.objects.get(pk=done.pk).status == Trial.Status.SUCCEEDED
    assert Run.objects.get(pk=done_run.pk).status == Run.Status.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_driver_whose_lease_was_taken_notices_within_a_heartbeat(settings):
    from tuning.raytune import runner

    settings.TUNIX_RT = {**settings.TUNIX_RT, "HEARTBEAT_INTERVAL_S": 0.2}
    job = running_job(lease_owner="me")
    keeper = runner.lease_keeper(job.pk, "me")
    keeper.start()
    try:
        renewed_from = TuningJob.objects.get(pk=job.pk).lease_expires_at
        wait_for(
            lambda: TuningJob.objects.get(pk=job.pk).lease_expires_at != renewed_from,
            timeout=10,
            interval=0.05,
            message="the keeper to renew the lease",
        )
        assert not keeper.lost and TuningJob.objects.get(pk=job.pk).lease_owner == "me"
        TuningJob.objects.filter(pk=job.pk).update(lease_owner="another worker")
        wait_for(lambda: keeper.lost, timeout=5, interval=0.05, message="the keeper to notice")
    finally:
        keeper.stop()
    assert not runner.request_interrupt("no job runs in this process")
