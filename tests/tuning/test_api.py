from __future__ import annotations

from unittest import mock

import pytest
from rest_framework.test import APIClient

from tests.factories import RunFactory, TrialFactory, TuningJobFactory
from tuning.models import Trial, TuningJob

JOBS = "/api/tuning/jobs/"
SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
    "batch_size": {"type": "choice", "values": [16, 32]},
}
GOOD = {"name": "lr search", "trainer": "sklearn-mlp", "dataset": "digits", "search_space": SPACE}


def payload(**changes):
    data = {**GOOD, **changes}
    return {k: v for k, v in data.items() if v is not Ellipsis}


BAD_PAYLOADS = [
    ("name missing", payload(name=...), "name"),
    ("name blank", payload(name=""), "name"),
    ("name too long", payload(name="x" * 201), "name"),
    ("trainer unknown", payload(trainer="xgboost"), "trainer"),
    ("trainer missing", payload(trainer=...), "trainer"),
    ("dataset unknown", payload(dataset="mnist"), "dataset"),
    ("search space missing", payload(search_space=...), "search_space"),
    ("search space not an object", payload(search_space=[1, 2]), "search_space"),
    ("search space empty", payload(search_space={}), "search_space"),
    ("unknown hyperparameter", payload(search_space={"depth": {"type": "int", "low": 1, "high": 3}}), "search_space"),
    ("low above high", payload(search_space={"alpha": {"type": "uniform", "low": 1, "high": 0}}), "search_space"),
    ("unknown type", payload(search_space={"alpha": {"type": "gaussian"}}), "search_space"),
    (
        "grid too big",
        payload(
            search_space={
                "batch_size": {"type": "grid", "values": list(range(1, 101))},
                "epochs": {"type": "grid", "values": list(range(1, 12))},
            }
        ),
        "search_space",
    ),
    ("fixed hyperparameter invalid", payload(fixed_hyperparameters={"epochs": 0}), "fixed_hyperparameters"),
    ("fixed hyperparameters not an object", payload(fixed_hyperparameters=[1]), "fixed_hyperparameters"),
    ("metric the trainer does not report", payload(metric="bleu"), "metric"),
    ("mode invalid", payload(mode="maximise"), "mode"),
    ("num_samples zero", payload(num_samples=0), "num_samples"),
    ("num_samples not a number", payload(num_samples="many"), "num_samples"),
    ("num_samples over the cap", payload(num_samples=100_000), "num_samples"),
    ("concurrency zero", payload(max_concurrent_trials=0), "max_concurrent_trials"),
    ("search algorithm unknown", payload(search_algorithm="bayesopt"), "search_algorithm"),
    ("scheduler unknown", payload(scheduler="pbt"), "scheduler"),
    ("time budget negative", payload(time_budget_s=-5), "time_budget_s"),
    ("cpus zero", payload(cpus_per_trial=0), "cpus_per_trial"),
    ("gpus negative", payload(gpus_per_trial=-1), "gpus_per_trial"),
    ("seed negative", payload(seed=-1), "seed"),
    ("max failed trials not below the trials", payload(num_samples=3, max_failed_trials=3), "max_failed_trials"),
    ("grid search with a continuous parameter", payload(search_algorithm="grid"), "search_space"),
    (
        "optuna with a grid",
        payload(search_algorithm="optuna", search_space={"batch_size": {"type": "grid", "values": [8, 16]}}),
        "search_space",
    ),
    ("unknown field", payload(num_sample=5), "num_sample"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("case", "data", "field"), BAD_PAYLOADS, ids=[c[0] for c in BAD_PAYLOADS])
def test_bad_payload_is_a_400_naming_the_field_and_stores_nothing(api_client, case, data, field):
    response = api_client.post(JOBS, data, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not TuningJob.objects.exists()


@pytest.mark.django_db
def test_create_then_read_with_progress(api_client, user):
    response = api_client.post(JOBS, payload(num_samples=4, fixed_hyperparameters={"epochs": 2}), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "created" and body["metric"] == "val_accuracy" and body["mode"] == "max"
    assert body["progress"]["total"] == 0 and body["best_run"] is None
    job = TuningJob.objects.get(pk=body["id"])
    assert job.owner == user
    detail = api_client.get(f"{JOBS}{job.pk}/").json()
    assert detail["search_space"]["batch_size"] == {"type": "choice", "values": [16, 32]}


@pytest.mark.django_db
def test_list_is_paginated_owner_scoped_and_filterable(api_client, user, django_assert_max_num_queries):
    TuningJobFactory.create_batch(3, owner=user, status=TuningJob.Status.SUCCEEDED)
    TuningJobFactory(owner=user, status=TuningJob.Status.FAILED)
    TuningJobFactory(status=TuningJob.Status.SUCCEEDED)  # someone else's
    with django_assert_max_num_queries(4):
        body = api_client.get(JOBS, {"status": "succeeded", "page_size": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2
    assert api_client.get(JOBS, {"status": "bogus"}).status_code == 400


@pytest.mark.django_db
def test_other_users_jobs_are_404(api_client):
    job = TuningJobFactory()
    for method, url in [
        ("get", f"{JOBS}{job.pk}/"),
        ("get", f"{JOBS}{job.pk}/trials/"),
        ("post", f"{JOBS}{job.pk}/start/"),
        ("post", f"{JOBS}{job.pk}/cancel/"),
        ("post", f"{JOBS}{job.pk}/clone/"),
    ]:
        assert getattr(api_client, method)(url).status_code == 404, url
    assert TuningJob.objects.count() == 1


@pytest.mark.django_db
def test_anonymous_is_refused():
    assert APIClient().get(JOBS).status_code in (401, 403)


@pytest.mark.django_db(transaction=True)
def test_start_is_202_then_409(api_client, user):
    job = TuningJobFactory(owner=user)
    with mock.patch("tuning.tasks.run_tuning_job_task.delay") as delay:
        first = api_client.post(f"{JOBS}{job.pk}/start/")
        second = api_client.post(f"{JOBS}{job.pk}/start/")
    assert first.status_code == 202 and first.json()["status"] == "queued"
    assert second.status_code == 409 and "only a created job can be started" in second.json()["detail"]
    delay.assert_called_once_with(job.pk)


@pytest.mark.django_db
def test_start_without_ray_is_503(api_client, user):
    job = TuningJobFactory(owner=user)
    with mock.patch("tuning.services.jobs.importlib.util.find_spec", return_value=None):
        response = api_client.post(f"{JOBS}{job.pk}/start/")
    assert response.status_code == 503 and "Ray Tune is not installed" in response.json()["detail"]
    assert TuningJob.objects.get(pk=job.pk).status == "created"


@pytest.mark.django_db
def test_cancel_and_clone(api_client, user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.QUEUED)
    assert api_client.post(f"{JOBS}{job.pk}/cancel/").json()["status"] == "cancelled"
    assert api_client.post(f"{JOBS}{job.pk}/cancel/").status_code == 409
    clone = api_client.post(f"{JOBS}{job.pk}/clone/")
    assert clone.status_code == 201 and clone.json()["status"] == "created"
    assert clone.json()["name"] == f"{job.name} (copy)"


@pytest.mark.django_db
def test_trials_are_paginated_and_sortable_by_metric(api_client, user, django_assert_max_num_queries):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.SUCCEEDED)
    for number, value in enumerate([0.5, 0.9, 0.7, None], start=1):
        TrialFactory(
            job=job,
            number=number,
            best_metric_value=value,
            run=RunFactory(owner=user),
            status=Trial.Status.SUCCEEDED if value else Trial.Status.FAILED,
        )
    with django_assert_max_num_queries(4):
        body = api_client.get(f"{JOBS}{job.pk}/trials/", {"ordering": "metric", "page_size": 3}).json()
    assert body["count"] == 4
    assert [t["number"] for t in body["results"]] == [2, 3, 1]
    assert body["results"][0]["run"]["status"] == "queued"
    assert api_client.get(f"{JOBS}{job.pk}/trials/", {"ordering": "password"}).status_code == 400


@pytest.mark.django_db
def test_every_endpoint_is_in_the_openapi_schema(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    for path in [
        "/api/tuning/jobs/",
        "/api/tuning/jobs/{id}/",
        "/api/tuning/jobs/{id}/trials/",
        "/api/tuning/jobs/{id}/start/",
        "/api/tuning/jobs/{id}/cancel/",
        "/api/tuning/jobs/{id}/clone/",
    ]:
        assert path in paths, path
    assert "post" in paths["/api/tuning/jobs/"] and "get" in paths["/api/tuning/jobs/"]


@pytest.mark.django_db
def test_admin_lists_jobs_with_trials_and_cancels_through_the_service(client, user):
    user.is_staff = user.is_superuser = True
    user.save()
    client.force_login(user)
    job = TuningJobFactory(owner=user, status=TuningJob.Status.QUEUED)
    TrialFactory(job=job)
    assert client.get("/admin/tuning/tuningjob/?status__exact=queued&q=job").status_code == 200
    assert client.get(f"/admin/tuning/tuningjob/{job.pk}/change/").status_code == 200
    response = client.post("/admin/tuning/tuningjob/", {"action": "cancel_jobs", "_selected_action": [job.pk]})
    assert response.status_code == 302
    assert TuningJob.objects.get(pk=job.pk).status == TuningJob.Status.CANCELLED


@pytest.mark.django_db
def test_trials_api_says_why_each_trial_ended_from_one_field(api_client, user):
    job = TuningJobFactory(owner=user, status=TuningJob.Status.CANCELLED, cancelled_by=user)
    TrialFactory(job=job, number=1, status=Trial.Status.STOPPED, end_reason=Trial.EndReason.STOPPED_EARLY, iterations=3)
    TrialFactory(job=job, number=2, status=Trial.Status.FAILED, end_reason=Trial.EndReason.FAILED, error_message="boom")
    TrialFactory(job=job, number=3, status=Trial.Status.CANCELLED, end_reason=Trial.EndReason.CANCELLED)
    TrialFactory(job=job, number=4, status=Trial.Status.RUNNING)
    rows = api_client.get(f"{JOBS}{job.pk}/trials/?ordering=number").json()["results"]
    assert [(r["end_reason"], r["end_description"]) for r in rows] == [
        ("stopped_early", "Stopped early at step 3"),
        ("failed", "Failed: boom"),
        ("cancelled", f"Cancelled by {user.username}"),
        ("", ""),
    ]
    assert api_client.get(f"{JOBS}{job.pk}/").json()["cancelled_by"] == user.username
