"""What a real Ray trial process sees: the GPU Ray assigned it, and Ray's usage statistics off.

The session's worker announces one fake GPU (RAY_NUM_GPUS=1, tests/conftest.py), so a job asking
for half a GPU per trial goes through Ray's own scheduling and device assignment."""

from __future__ import annotations

import pytest

from runs.models import LogLine
from tests.conftest import wait_for
from tuning.models import Trial, TuningJob
from tuning.raytune.runner import trial_env

JOBS = "/api/tuning/jobs/"


def run_job(api_client, **data) -> TuningJob:
    data = {
        "name": "environment",
        "trainer": "test-env",
        "dataset": "none",
        "search_space": {"x": {"type": "grid", "values": [0.3, 0.7]}},
        "search_algorithm": "grid",
        "num_samples": 1,
        "max_concurrent_trials": 2,
        **data,
    }
    created = api_client.post(JOBS, data, format="json")
    assert created.status_code == 201, created.content
    assert api_client.post(f"{JOBS}{created.json()['id']}/start/").status_code == 202
    job_id = created.json()["id"]
    wait_for(lambda: TuningJob.objects.get(pk=job_id).is_terminal, timeout=120, message=f"job {job_id} to end")
    return TuningJob.objects.get(pk=job_id)


def trial_logs(job: TuningJob) -> dict[int, str]:
    logs = {}
    for run_id in Trial.objects.filter(job=job).values_list("run_id", flat=True):
        logs[run_id] = "\n".join(LogLine.objects.filter(run_id=run_id).order_by("seq").values_list("text", flat=True))
    return logs


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_half_a_gpu_per_trial_runs_two_trials_at_once_on_one_gpu_each_seeing_it(celery_worker, api_client):
    job = run_job(api_client, gpus_per_trial=0.5, cpus_per_trial=0.5, fixed_hyperparameters={"await_running": 2})

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    logs = trial_logs(job)
    assert len(logs) == 2
    for log in logs.values():
        assert "saw 2 runs of job" in log  # each waited for the other: two halves of one GPU
        assert "env CUDA_VISIBLE_DEVICES=0" in log  # the device Ray assigned, not the worker's


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_gpu_request_the_cluster_cannot_place_fails_the_job_saying_so(celery_worker, api_client):
    job = run_job(api_client, gpus_per_trial=2)

    assert job.status == TuningJob.Status.FAILED
    assert "each trial asks for 2 GPU(s) but the Ray cluster has 1" in job.error_message


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_ray_usage_statistics_are_off_in_the_trial_processes(celery_worker, api_client):
    job = run_job(api_client, search_space={"x": {"type": "grid", "values": [0.5]}})

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    (log,) = trial_logs(job).values()
    assert "env RAY_USAGE_STATS_ENABLED=0" in log
    assert "env CUDA_VISIBLE_DEVICES=0" not in log  # it asked for no GPU


def test_ray_usage_statistics_are_sent_only_when_the_user_opts_in(settings):
    settings.RAY_USAGE_STATS = False
    assert trial_env()["RAY_USAGE_STATS_ENABLED"] == "0"
    settings.RAY_USAGE_STATS = True
    assert trial_env()["RAY_USAGE_STATS_ENABLED"] == "1"
