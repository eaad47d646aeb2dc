"""Fields the server owns (owner, status, best run, timestamps, counters, output folder) cannot be
set by a client: creating with them is a 400 naming each one, and there is no update route."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from runs.models import Run
from tests.factories import RunFactory, TuningJobFactory, UserFactory
from tests.ui.test_job_form import form_data
from tuning.models import TuningJob

pytestmark = pytest.mark.django_db

GOOD_JOB = {
    "name": "lr search",
    "trainer": "sklearn-mlp",
    "dataset": "digits",
    "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
}
GOOD_RUN = {"trainer": "sklearn-mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}}

JOB_SERVER_FIELDS = {
    "id": 999,
    "owner": 1,
    "status": "succeeded",
    "cancel_requested": True,
    "error_message": "x",
    "best_run": 1,
    "best_hyperparameters": {"learning_rate": 0.1},
    "best_metric_value": 1.0,
    "progress": {"total": 5},
    "experiment_path": "/etc",
    "lease_owner": "me",
    "created_at": "2020-01-01T00:00:00Z",
    "queued_at": "2020-01-01T00:00:00Z",
    "started_at": "2020-01-01T00:00:00Z",
    "finished_at": "2020-01-01T00:00:00Z",
}
RUN_SERVER_FIELDS = {
    "id": 999,
    "owner": 1,
    "status": "succeeded",
    "cancel_requested": True,
    "output_dir": "/etc",
    "error_message": "x",
    "error_traceback": "x",
    "attempts": 7,
    "last_step": 100,
    "latest_metrics": {"loss": 0.0},
    "log_lines_dropped": 3,
    "evaluation": {"primary_score": 1.0},
    "heartbeat_at": "2020-01-01T00:00:00Z",
    "created_at": "2020-01-01T00:00:00Z",
    "started_at": "2020-01-01T00:00:00Z",
    "finished_at": "2020-01-01T00:00:00Z",
}


@pytest.fixture
def user_client():
    user = UserFactory()
    client = APIClient()
    client.force_authenticate(user)
    return user, client


@pytest.mark.parametrize(("field", "value"), JOB_SERVER_FIELDS.items())
def test_job_create_refuses_a_server_owned_field(user_client, field, value):
    _, client = user_client
    response = client.post("/api/tuning/jobs/", {**GOOD_JOB, field: value}, format="json")
    assert response.status_code == 400, response.content
    assert response.json() == {field: ["unknown field"]}
    assert not TuningJob.objects.exists()


@pytest.mark.parametrize(("field", "value"), RUN_SERVER_FIELDS.items())
def test_run_create_refuses_a_server_owned_field(user_client, field, value):
    _, client = user_client
    response = client.post("/api/runs/", {**GOOD_RUN, field: value}, format="json")
    assert response.status_code == 400, response.content
    assert response.json() == {field: ["unknown field"]}
    assert not Run.objects.exists()


def test_created_objects_get_server_values(user_client):
    user, client = user_client
    job = client.post("/api/tuning/jobs/", GOOD_JOB, format="json").json()
    assert job["owner"] == user.username and job["status"] == "created" and job["best_run"] is None
    run = client.post("/api/runs/", GOOD_RUN, format="json").json()
    assert run["owner"] == user.username and run["status"] == "queued" and run["attempts"] == 0
    assert Run.objects.get(pk=run["id"]).output_dir.endswith(f"runs/{run['id']}")


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_there_is_no_update_or_delete_route(user_client, method):
    user, client = user_client
    job = TuningJobFactory(owner=user)
    run = RunFactory(owner=user)
    for url in (f"/api/tuning/jobs/{job.pk}/", f"/api/runs/{run.pk}/"):
        response = getattr(client, method)(url, {"status": "succeeded", "owner": 99}, format="json")
        assert response.status_code == 405, url
    job.refresh_from_db()
    run.refresh_from_db()
    assert job.status == TuningJob.Status.CREATED and job.owner == user
    assert run.status == Run.Status.QUEUED and run.owner == user


def test_the_job_form_ignores_posted_server_fields(client):
    user, someone = UserFactory(), UserFactory()
    client.force_login(user)
    data = form_data(owner=str(someone.pk), status="succeeded", best_metric_value="1", created_at="2020-01-01")
    response = client.post("/jobs/new/", data)
    assert response.status_code == 302
    job = TuningJob.objects.get()
    assert job.owner == user and job.status == TuningJob.Status.CREATED and job.best_metric_value is None
    assert job.created_at.year > 2020


def test_a_clone_belongs_to_whoever_clones(client):
    owner, staff = UserFactory(), UserFactory(is_staff=True)
    job = TuningJobFactory(owner=owner)
    api = APIClient()
    api.force_authenticate(staff)
    clone = api.post(f"/api/tuning/jobs/{job.pk}/clone/").json()
    assert clone["owner"] == staff.username and clone["status"] == "created"
