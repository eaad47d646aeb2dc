from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from runs import services
from runs.execution import execute_run
from runs.models import Run
from runs.trainers.base import EvaluationResult
from tests.factories import RunFactory, UserFactory


def create_run(client, **data):
    body = {"trainer": "quadratic", "dataset": "bowl", **data}
    return client.post("/api/runs/", body, format="json")


@pytest.fixture
def other_run(db):
    return RunFactory(owner=UserFactory())


def finished_run(owner, score: float = 0.5, **fields) -> Run:
    run = RunFactory(owner=owner, status=Run.Status.RUNNING, **fields)
    services.run_finish(run_id=run.pk, result=EvaluationResult(metrics={"accuracy": score}, primary_metric="accuracy"))
    return Run.objects.get(pk=run.pk)


# --- create ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_returns_201_with_a_queued_run_enqueued_after_commit(
    api_client, user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = create_run(api_client, name="first", hyperparameters={"learning_rate": 0.3})

    assert response.status_code == 201, response.data
    run = Run.objects.get()
    assert response["Location"].endswith(f"/api/runs/{run.pk}/")
    assert response.data["status"] == "queued"
    assert response.data["owner"] == user.username
    assert response.data["evaluation"] is None
    assert response.data["hyperparameters"]["learning_rate"] == 0.3
    assert response.data["hyperparameters"]["epochs"] == 20  # defaults filled in
    assert run.owner == user and run.name == "first"
    assert len(callbacks) == 1


def test_anonymous_requests_are_refused(db):
    assert APIClient().get("/api/runs/").status_code == 403
    assert APIClient().get("/api/trainers/").status_code == 403


@pytest.mark.django_db
def test_token_authentication_works(user):
    from tests.factories import ApiTokenFactory

    client = APIClient(HTTP_AUTHORIZATION=f"Token {ApiTokenFactory(user=user).key}")
    assert client.get("/api/runs/").status_code == 200


# --- list -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_shows_only_own_runs_newest_first_and_staff_see_all(api_client, user, other_run):
    mine = RunFactory.create_batch(2, owner=user)

    response = api_client.get("/api/runs/")

    assert [item["id"] for item in response.data["results"]] == [mine[1].pk, mine[0].pk]
    staff = APIClient()
    staff.force_authenticate(UserFactory(is_staff=True))
    assert staff.get("/api/runs/").data["count"] == 3


@pytest.mark.django_db
def test_list_filters_on_status_trainer_and_dataset(api_client, user):
    queued = RunFactory(owner=user)
    failed = RunFactory(owner=user, status=Run.Status.FAILED, dataset="wine")
    command = RunFactory(owner=user, trainer="quadratic", dataset="bowl", status=Run.Status.RUNNING)

    def ids(query):
        response = api_client.get(f"/api/runs/?{query}")
        assert response.status_code == 200, response.data
        return {item["id"] for item in response.data["results"]}

    assert ids("status=queued") == {queued.pk}
    assert ids("status=failed&status=running") == {failed.pk, command.pk}
    assert ids("trainer=quadratic") == {command.pk}
    assert ids("dataset=wine") == {failed.pk}
    assert api_client.get("/api/runs/?status=finished").status_code == 400


@pytest.mark.django_db
def test_list_orders_by_primary_score(api_client, user):
    low, high = finished_run(user, 0.2), finished_run(user, 0.9)
    RunFactory(owner=user)

    response = api_client.get("/api/runs/?ordering=-primary_score&status=succeeded")

    assert [(item["id"], item["primary_score"]) for item in response.data["results"]] == [(high.pk, 0.9), (low.pk, 0.2)]
    assert response.data["results"][0]["primary_metric"] == "accuracy"


@pytest.mark.django_db
def test_list_is_paginated_and_page_size_is_capped(api_client, user, settings):
    Run.objects.bulk_create([Run(owner=user, trainer="sklearn-mlp", dataset="digits") for _ in range(205)])

    assert len(api_client.get("/api/runs/").data["results"]) == 50
    capped = api_client.get("/api/runs/?page_size=100000")
    assert len(capped.data["results"]) == settings.TUNIX_RT["MAX_PAGE_SIZE"] == 200
    assert capped.data["count"] == 205 and capped.data["next"]


@pytest.mark.parametrize("count", [3, 30])
@pytest.mark.django_db
def test_list_query_count_does_not_grow_with_runs(api_client, user, count, django_assert_max_num_queries):
    for index in range(count):
        if index % 2:
            finished_run(user)
        else:
            RunFactory(owner=user)

    with django_assert_max_num_queries(2):
        response = api_client.get("/api/runs/")

    assert len(response.data["results"]) == count


# --- detail, metrics, logs ------------------------------------------------------------------------


@pytest.mark.django_db
def test_detail_of_an_executed_run_has_its_evaluation_and_links(api_client, user):
    run = services.run_create(
        owner=user, trainer="quadratic", dataset="bowl", hyperparameters={"epochs": 3}, enqueue=False
    )
    execute_run(run.pk)

    data = api_client.get(f"/api/runs/{run.pk}/").data

    assert data["status"] == "succeeded"
    assert data["evaluation"]["primary_metric"] == "loss"
    assert set(data["evaluation"]["metrics"]) == {"loss", "distance"}
    assert data["primary_score"] == data["evaluation"]["primary_score"]
    assert data["duration_s"] >= 0
    assert data["links"]["logs"].endswith(f"/api/runs/{run.pk}/logs/")
    assert api_client.get(data["links"]["metrics"]).data["steps"] == [1, 2, 3]


@pytest.mark.django_db
def test_metrics_come_as_columns_and_after_returns_only_newer_steps(api_client, user):
    run = RunFactory(owner=user, status=Run.Status.RUNNING)
    services.run_metrics_record(
        run_id=run.pk, points=[(step, {"loss": 1 / step}) for step in range(1, 3001)] + [(3001, {"accuracy": 0.5})]
    )

    data = api_client.get(f"/api/runs/{run.pk}/metrics/").data

    assert data["steps"] == list(range(1, 3002))
    assert data["series"]["loss"][:2] == [1.0, 0.5] and data["series"]["loss"][-1] is None
    assert data["series"]["accuracy"] == [None] * 3000 + [0.5]
    newer = api_client.get(f"/api/runs/{run.pk}/metrics/?after=2999").data
    assert newer["steps"] == [3000, 3001]


@pytest.mark.django_db
def test_logs_tail_live_tailing_and_dropped_lines(api_client, user, settings):
    settings.TUNIX_RT = {**settings.TUNIX_RT, "LOG_MAX_LINES": 100}
    run = RunFactory(owner=user, status=Run.Status.RUNNING)
    services.run_logs_append(run_id=run.pk, lines=[("stdout", f"line {n}") for n in range(1, 151)])
    url = f"/api/runs/{run.pk}/logs/"

    tail = api_client.get(url, {"limit": 10}).data
    assert [line["text"] for line in tail["lines"]] == [f"line {n}" for n in range(141, 151)]
    assert (tail["dropped"], tail["omitted"], tail["next_after"], tail["status"]) == (50, 140, 150, "running")

    services.run_logs_append(run_id=run.pk, lines=[("stderr", "line 151"), ("stderr", "line 152")])
    newer = api_client.get(url, {"after": tail["next_after"]}).data
    assert [(line["seq"], line["stream"], line["text"]) for line in newer["lines"]] == [
        (151, "stderr", "line 151"),
        (152, "stderr", "line 152"),
    ]
    assert (newer["omitted"], newer["has_more"], newer["next_after"]) == (0, False, 152)

    late = api_client.get(url, {"after": 10, "limit": 5}).data  # lines 11..52 were dropped meanwhile
    assert [line["seq"] for line in late["lines"]] == [53, 54, 55, 56, 57]
    assert (late["omitted"], late["has_more"]) == (42, True)
    assert api_client.get(url, {"after": 152}).data["lines"] == []
    assert api_client.get(url, {"after": -1}).status_code == 400
    assert "limit" in api_client.get(url, {"limit": 0}).data


# --- cancel ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_queued_run_is_immediate_running_run_is_asked_and_ended_run_is_409(api_client, user):
    queued = RunFactory(owner=user)
    running = RunFactory(owner=user, status=Run.Status.RUNNING)

    response = api_client.post(f"/api/runs/{queued.pk}/cancel/")
    assert response.status_code == 202 and response.data["status"] == "cancelled"
    response = api_client.post(f"/api/runs/{running.pk}/cancel/")
    assert response.status_code == 202
    assert (response.data["status"], response.data["cancel_requested"]) == ("running", True)

    response = api_client.post(f"/api/runs/{queued.pk}/cancel/")
    assert response.status_code == 409
    assert "already cancelled" in response.data["detail"]


# --- scoping --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/runs/{id}/"),
        ("get", "/api/runs/{id}/metrics/"),
        ("get", "/api/runs/{id}/logs/"),
        ("get", "/api/runs/{id}/artifacts/"),
        ("get", "/api/runs/{id}/artifacts/model.pkl"),
        ("post", "/api/runs/{id}/cancel/"),
    ],
)
@pytest.mark.django_db
def test_other_users_runs_are_404(api_client, other_run, method, path):
    Path(other_run.output_dir or services.run_output_dir(other_run.pk)).mkdir(parents=True, exist_ok=True)
    response = getattr(api_client, method)(path.format(id=other_run.pk))
    assert response.status_code == 404
    other_run.refresh_from_db()
    assert other_run.status == Run.Status.QUEUED


# --- artifacts ------------------------------------------------------------------------------------


@pytest.fixture
def run_with_files(user, tmp_path):
    run = services.run_create(owner=user, trainer="quadratic", dataset="bowl", enqueue=False)
    out = Path(run.output_dir)
    (out / "checkpoints").mkdir(parents=True)
    (out / "result.json").write_text('{"x": 1}')
    (out / "checkpoints" / "step 1.bin").write_bytes(b"\x00" * 1000)
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, out / "escape.txt")
    os.symlink(tmp_path, out / "escape-dir")
    return run


@pytest.mark.django_db
def test_artifacts_lists_files_with_sizes_and_downloads_them(api_client, run_with_files):
    data = api_client.get(f"/api/runs/{run_with_files.pk}/artifacts/").data

    assert [(f["path"], f["size"]) for f in data["files"]] == [("checkpoints/step 1.bin", 1000), ("result.json", 8)]
    assert data["truncated"] is False
    response = api_client.get(data["files"][0]["url"])
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"\x00" * 1000
    assert 'attachment; filename="step 1.bin"' in response["Content-Disposition"]


@pytest.mark.parametrize(
    "path",
    [
        "../../../../etc/passwd",
        "checkpoints/../../../../../etc/passwd",
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/etc/passwd",
        "escape.txt",
        "escape-dir/secret.txt",
        "checkpoints",
        "missing.txt",
    ],
)
@pytest.mark.django_db
def test_artifact_download_never_leaves_the_output_folder(api_client, run_with_files, path):
    response = api_client.get(f"/api/runs/{run_with_files.pk}/artifacts/{path}")
    assert response.status_code == 404


# --- trainers, schema, docs -----------------------------------------------------------------------


@pytest.mark.django_db
def test_trainers_list_and_detail_give_the_schemas(api_client):
    names = [trainer["name"] for trainer in api_client.get("/api/trainers/").data]
    assert {"sklearn-mlp", "quadratic"} <= set(names)

    detail = api_client.get("/api/trainers/quadratic/").data
    learning_rate = next(p for p in detail["hyperparameters"] if p["name"] == "learning_rate")
    assert learning_rate == {
        "name": "learning_rate",
        "type": "float",
        "default": 0.1,
        "description": "Gradient-descent step size (above 0.5 it overshoots and oscillates).",
        "low": 0.0001,
        "high": 1.0,
        "choices": None,
        "log": True,
    }
    assert detail["datasets"] == ["bowl", "offset"] and detail["default_mode"] == "min"
    assert api_client.get("/api/trainers/nope/").status_code == 404


def test_openapi_schema_is_valid_and_has_no_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    schema = (tmp_path / "schema.yml").read_text()
    for route in ("/api/runs/{id}/logs/", "/api/runs/{id}/metrics/", "/api/runs/{id}/cancel/", "/api/trainers/{name}/"):
        assert f"  {route}:" in schema


@pytest.mark.django_db
def test_docs_page_serves_swagger_ui_from_local_static_files(client):
    from django.contrib.staticfiles import finders

    from tests.factories import UserFactory

    assert client.get(reverse("api-docs")).status_code == 403  # signed-in users only
    client.force_login(UserFactory())
    response = client.get(reverse("api-docs"))

    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "https://" not in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert client.get(reverse("schema")).status_code == 200


@pytest.mark.django_db
def test_browsable_api_pages_render(client, user):
    client.force_login(user)
    run = RunFactory(owner=user)
    for url in ("/api/", "/api/runs/", f"/api/runs/{run.pk}/", f"/api/runs/{run.pk}/logs/", "/api/trainers/quadratic/"):
        response = client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, url
        assert response["Content-Type"].startswith("text/html")
