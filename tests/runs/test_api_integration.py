"""Runs created and cancelled through the API, executed by a real Celery worker on real Redis."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from runs.services import run_output_dir
from tests.conftest import assert_processes_gone, wait_for
from tests.factories import UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def client(celery_worker):
    user = UserFactory()
    client = APIClient()
    assert client.login(username=user.username, password="pass-word-123")
    return client


def wait_for_status(client, url, statuses, timeout=60):
    return wait_for(
        lambda: (data := client.get(url).data)["status"] in statuses and data,
        timeout=timeout,
        message=f"{url} to reach {statuses}",
    )


def test_run_created_through_the_api_succeeds_on_the_worker(client):
    response = client.post(
        "/api/runs/",
        {"trainer": "sklearn-mlp", "dataset": "digits", "hyperparameters": {"epochs": 5}},
        format="json",
    )
    assert response.status_code == 201, response.data
    url = response["Location"]

    run = wait_for_status(client, url, {"succeeded", "failed", "cancelled"})

    assert run["status"] == "succeeded", run["error_message"]
    assert run["evaluation"]["primary_metric"] == "accuracy"
    assert run["evaluation"]["primary_score"] > 0.8
    metrics = client.get(run["links"]["metrics"]).data
    assert metrics["steps"] == [1, 2, 3, 4, 5]
    assert len(metrics["series"]["val_accuracy"]) == 5
    logs = client.get(run["links"]["logs"]).data
    assert any(line["text"].startswith("epoch 5:") for line in logs["lines"])
    assert any(line["text"].startswith("evaluation: accuracy=") for line in logs["lines"])
    artifacts = client.get(run["links"]["artifacts"]).data["files"]
    assert {"model.pkl", "evaluation.json"} <= {f["path"] for f in artifacts}


def test_running_run_cancelled_through_the_api_ends_cancelled(client):
    response = client.post(
        "/api/runs/",
        {"trainer": "sklearn-mlp", "dataset": "digits", "hyperparameters": {"epochs": 200, "epoch_delay_s": 0.2}},
        format="json",
    )
    url = response["Location"]
    wait_for(lambda: client.get(url).data["last_step"], timeout=60, message="the first epoch")

    response = client.post(f"{url}cancel/")

    assert response.status_code == 202
    run = wait_for_status(client, url, {"succeeded", "failed", "cancelled"}, timeout=60)
    assert run["status"] == "cancelled"
    assert run["last_step"] < 200
    assert run["evaluation"] is None
    assert client.post(f"{url}cancel/").status_code == 409


def test_command_run_cancelled_through_the_api_leaves_no_process_behind(client):
    response = client.post(
        "/api/runs/",
        {
            "trainer": "quadratic",
            "dataset": "bowl",
            "hyperparameters": {"epochs": 1000, "sleep_s": 0.2, "spawn": "escaped"},
        },
        format="json",
    )
    url = response["Location"]
    pid_file = run_output_dir(response.data["id"]) / "helpers.pid"
    pids = wait_for(
        lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2 and pid_file.read_text().split(),
        timeout=60,
        message="the command's helper processes",
    )

    assert client.post(f"{url}cancel/").status_code == 202

    run = wait_for_status(client, url, {"succeeded", "failed", "cancelled"}, timeout=60)
    assert run["status"] == "cancelled"
    assert_processes_gone([int(pid) for pid in pids])
