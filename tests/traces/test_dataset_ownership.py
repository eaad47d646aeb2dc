"""A user's uploaded trace datasets are theirs: another user can neither see nor train on them."""

from __future__ import annotations

import json

import pytest

from runs.models import Run
from tests.factories import UserFactory
from traces import services as trace_services
from tuning.models import TuningJob

LINE = {"prompt": "What is 1+2?", "steps": ["1+2=3"], "final_answer": "3"}


@pytest.fixture
def private_dataset(user):
    content = "\n".join(json.dumps({**LINE, "prompt": f"What is {i}+2?"}) for i in range(40))
    return trace_services.trace_dataset_create(owner=user, name="private-traces", content=content)


@pytest.mark.django_db
def test_another_user_cannot_run_or_tune_on_a_private_dataset(private_dataset, api_client):
    reference = f"{private_dataset.name}@{private_dataset.version}"
    intruder = UserFactory()
    api_client.force_authenticate(intruder)

    trainers = api_client.get("/api/trainers/tunix-sft/").json()
    run = api_client.post("/api/runs/", {"trainer": "tunix-sft", "dataset": reference}, format="json")
    job = api_client.post(
        "/api/tuning/jobs/",
        {
            "name": "steal",
            "trainer": "tunix-sft",
            "dataset": reference,
            "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        },
        format="json",
    )

    assert reference not in trainers["datasets"]
    assert run.status_code == 400 and "dataset" in run.json()
    assert job.status_code == 400 and "dataset" in job.json()
    assert Run.objects.count() == 0 and TuningJob.objects.count() == 0


@pytest.mark.django_db
def test_the_owner_sees_and_may_use_their_dataset(private_dataset, user, api_client, client):
    reference = f"{private_dataset.name}@{private_dataset.version}"
    client.force_login(user)
    intruder = client.__class__()
    intruder.force_login(UserFactory())

    assert reference in api_client.get("/api/trainers/tunix-sft/").json()["datasets"]
    assert f'<option value="{reference}"' in client.get("/jobs/new/?trainer=tunix-sft").content.decode()
    assert reference not in intruder.get("/jobs/new/?trainer=tunix-sft").content.decode()
    response = api_client.post(
        "/api/tuning/jobs/",
        {
            "name": "mine",
            "trainer": "tunix-sft",
            "dataset": reference,
            "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
