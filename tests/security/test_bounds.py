"""Bounds on what one request can cost. Each violation is a 4xx naming the field (or, for the
per-user caps, a 429 saying what to do); docs/configuration.md lists them all."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from runs.models import Run
from tests.factories import RunFactory, TrialFactory, TuningJobFactory, UserFactory
from tests.ui.test_job_form import form_data
from tuning.models import TuningJob
from tuning.services import MAX_CONCURRENT_TRIALS, MAX_TIME_BUDGET_S

pytestmark = pytest.mark.django_db

JOBS = "/api/tuning/jobs/"
LR = {"type": "loguniform", "low": 1e-4, "high": 1e-1}
GOOD_JOB = {"name": "lr search", "trainer": "sklearn-mlp", "dataset": "digits", "search_space": {"learning_rate": LR}}
GOOD_RUN = {"trainer": "sklearn-mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}


@pytest.fixture
def user():
    return UserFactory()


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


BOUNDS = [
    ("trials", {"num_samples": 10_001}, "num_samples"),
    ("concurrency", {"max_concurrent_trials": MAX_CONCURRENT_TRIALS + 1}, "max_concurrent_trials"),
    ("time budget", {"time_budget_s": MAX_TIME_BUDGET_S + 1}, "time_budget_s"),
    ("time budget zero", {"time_budget_s": 0}, "time_budget_s"),
    ("too many parameters", {"search_space": {f"p{i}": LR for i in range(33)}}, "search_space"),
    ("too many choice values", {"search_space": {"batch_size": {"type": "choice", "values": list(range(1, 258))}}},
     "search_space"),
    ("nested specification", {"search_space": {"learning_rate": {"type": "uniform", "low": {"x": 1}, "high": 2}}},
     "search_space"),
    ("nested choice value", {"search_space": {"batch_size": {"type": "choice", "values": [[16, [32]]]}}},
     "search_space"),
    ("nested space", {"search_space": {"learning_rate": {"learning_rate": LR}}}, "search_space"),
    ("grid x samples", {"num_samples": 1000,
                        "search_space": {"epochs": {"type": "grid", "values": list(range(1, 12))}}}, "search_space"),
    ("name length", {"name": "x" * 201}, "name"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "field"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_job_bound_is_a_400_naming_the_field(api, case, change, field):
    response = api.post(JOBS, {**GOOD_JOB, **change}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not TuningJob.objects.exists()


def test_body_over_the_upload_limit_is_a_json_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    response = api.post(JOBS, {**GOOD_JOB, "name": "x" * 5000}, format="json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in response.json()["detail"]
    assert not TuningJob.objects.exists()


def test_body_over_the_limit_on_a_page_is_a_plain_400(client, user, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    client.force_login(user)
    client.raise_request_exception = False
    response = client.post("/jobs/new/", form_data(name="x" * 5000))
    assert response.status_code == 400
    assert not TuningJob.objects.exists()


@pytest.mark.parametrize("depth", [100, 50_000])
def test_deeply_nested_json_is_a_400_not_a_500(api, depth):
    body = '{"search_space": ' + "[" * depth + "]" * depth + "}"
    response = api.post(JOBS, body, content_type="application/json")
    assert response.status_code == 400, response.content[:200]
    assert response["Content-Type"] == "application/json"
    response = api.post("/api/runs/", body, content_type="application/json")
    assert response.status_code == 400


def test_page_size_is_capped(api, user, settings):
    cap = settings.TUNIX_RT["MAX_PAGE_SIZE"]
    Run.objects.bulk_create([Run(owner=user, trainer="sklearn-mlp", dataset="digits") for _ in range(cap + 5)])
    body = api.get("/api/runs/", {"page_size": 100_000}).json()
    assert body["count"] == cap + 5 and len(body["results"]) == cap
    TuningJob.objects.bulk_create(
        [TuningJob(owner=user, name=f"j{i}", trainer="sklearn-mlp", dataset="digits") for i in range(cap + 1)]
    )
    assert len(api.get(JOBS, {"page_size": 100_000}).json()["results"]) == cap
    job = TuningJob.objects.first()
    TrialFactory.create_batch(3, job=job)
    assert len(api.get(f"{JOBS}{job.pk}/trials/", {"page_size": 2}).json()["results"]) == 2


def test_log_limit_is_bounded(api, user, settings):
    run = RunFactory(owner=user)
    response = api.get(f"/api/runs/{run.pk}/logs/", {"limit": settings.TUNIX_RT["LOG_MAX_LINES"] + 1})
    assert response.status_code == 400 and "limit" in response.json()


# --- active jobs and runs per user: 429 ------------------------------------------------------------


@pytest.fixture
def caps(settings):
    settings.TUNIX_RT = {**settings.TUNIX_RT, "MAX_ACTIVE_JOBS_PER_USER": 2, "MAX_ACTIVE_RUNS_PER_USER": 2}


def test_starting_past_the_active_job_limit_is_a_429(api, user, caps):
    jobs = TuningJobFactory.create_batch(3, owner=user)
    TuningJobFactory(owner=user, status=TuningJob.Status.SUCCEEDED)  # finished jobs do not count
    for job in jobs[:2]:
        assert api.post(f"{JOBS}{job.pk}/start/").status_code == 202
    response = api.post(f"{JOBS}{jobs[2].pk}/start/")
    assert response.status_code == 429
    assert "2 active tuning jobs" in response.json()["detail"]
    jobs[2].refresh_from_db()
    assert jobs[2].status == TuningJob.Status.CREATED  # still startable later

    # Another user is not affected; once one of ours ends, ours starts.
    someone = UserFactory()
    other = APIClient()
    other.force_authenticate(someone)
    other_job = TuningJobFactory(owner=someone)
    assert other.post(f"{JOBS}{other_job.pk}/start/").status_code == 202
    assert api.post(f"{JOBS}{jobs[0].pk}/cancel/").status_code == 200
    assert api.post(f"{JOBS}{jobs[2].pk}/start/").status_code == 202


def test_the_job_page_shows_the_limit(client, user, caps):
    client.force_login(user)
    TuningJobFactory.create_batch(2, owner=user, status=TuningJob.Status.RUNNING)
    job = TuningJobFactory(owner=user)
    response = client.post(f"/jobs/{job.pk}/start/")
    assert response.status_code == 429
    assert "2 active tuning jobs" in response.content.decode() and 'id="action-error"' in response.content.decode()
    # Create-and-start from the form: the job is saved, the page says why it did not start.
    response = client.post("/jobs/new/", form_data(action="start"), follow=True)
    assert response.status_code == 200
    assert "could not start" in response.content.decode() and "2 active tuning jobs" in response.content.decode()
    assert TuningJob.objects.filter(status=TuningJob.Status.CREATED).count() == 2


def test_creating_past_the_active_run_limit_is_a_429(api, user, caps):
    job = TuningJobFactory(owner=user)
    TrialFactory(job=job, run=RunFactory(owner=user))  # a trial's run does not count
    RunFactory(owner=user, status=Run.Status.SUCCEEDED)  # nor does a finished run
    for _ in range(2):
        assert api.post("/api/runs/", GOOD_RUN, format="json").status_code == 201
    response = api.post("/api/runs/", GOOD_RUN, format="json")
    assert response.status_code == 429 and "2 active runs" in response.json()["detail"]
    assert Run.objects.filter(owner=user).count() == 4


def test_the_limit_settings_are_bounded(monkeypatch):
    import environ

    from tunix_rt import settings as project_settings

    monkeypatch.setenv("TUNIX_RT_MAX_ACTIVE_JOBS_PER_USER", "0")
    with pytest.raises(environ.ImproperlyConfigured, match="TUNIX_RT_MAX_ACTIVE_JOBS_PER_USER"):
        project_settings._bounded_int("TUNIX_RT_MAX_ACTIVE_JOBS_PER_USER", 5, 1, 10_000)


def test_every_bound_is_documented():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for name in (
        "TUNIX_RT_MAX_ACTIVE_JOBS_PER_USER",
        "TUNIX_RT_MAX_ACTIVE_RUNS_PER_USER",
        "DATA_UPLOAD_MAX_MEMORY_SIZE",
        "page_size",
        "num_samples",
        "max_concurrent_trials",
        "time_budget_s",
        "413",
        "429",
    ):
        assert name in docs, name


def test_json_body_is_bounded_before_it_is_parsed(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    body = json.dumps({**GOOD_RUN, "name": "y" * 4000})
    assert api.post("/api/runs/", body, content_type="application/json").status_code == 413
    assert not Run.objects.exists()
