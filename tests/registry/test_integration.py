"""Promotion by policy through the real components: API → Celery worker on Redis → Ray Tune →
the job's end promotes its best run, moves the alias or not, and says why on the job page."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from registry import services
from registry.models import ModelAlias
from tests.conftest import wait_for
from tests.tuning.test_integration import start_job, wait_until_finished
from tuning.models import TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def registry_dir() -> Path:
    """The worker writes blobs where its settings say: the test's default registry storage."""
    return Path(settings.STORAGES["registry"]["OPTIONS"]["location"])


def test_job_policy_promotes_and_moves_the_alias_only_if_better(celery_worker, api_client, user, make_run):
    # Two models whose champion the job's best run surely beats (val_accuracy -1) or not (2.0).
    for model, score in (("beaten", -1.0), ("unbeatable", 2.0)):
        services.model_version_promote(run=make_run(user, score=score), by=user, model_name=model, alias="champion")
    jobs = {}
    for model in ("beaten", "unbeatable"):
        jobs[model] = start_job(
            api_client,
            name=f"promote to {model}",
            search_space={"learning_rate": {"type": "choice", "values": [0.01]}},
            fixed_hyperparameters={"epochs": 2, "hidden_units": 16},
            num_samples=1,
            seed=1,
            promote_to={"model": model, "alias": "champion", "only_if_better": True},
        )
    finished = {model: wait_until_finished(job, timeout=120) for model, job in jobs.items()}
    for job in finished.values():
        assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    # The policy runs once the job has succeeded: its note is written a moment after the status.
    finished = {
        model: wait_for(
            lambda job=job: TuningJob.objects.filter(pk=job.pk).exclude(promotion_note="").first(),
            timeout=60,
            message="the promotion note",
        )
        for model, job in finished.items()
    }

    beaten = finished["beaten"]
    assert ModelAlias.objects.get(model__name="beaten", name="champion").version.version == 2
    assert (
        f"Promoted run {beaten.best_run_id} as beaten v2. Alias champion moved from v1 to v2" in beaten.promotion_note
    )
    browser = Client()
    browser.force_login(user)
    assert beaten.promotion_note in browser.get(f"/jobs/{beaten.pk}/").content.decode()

    unbeatable = finished["unbeatable"]
    assert ModelAlias.objects.get(model__name="unbeatable", name="champion").version.version == 1
    assert (
        "Alias champion stays on v1" in unbeatable.promotion_note
        and "does not beat 2 (max)" in unbeatable.promotion_note
    )

    # The version the worker stored downloads from the web process: the sklearn model is in it.
    version = api_client.get("/api/models/beaten/versions/2/").json()
    assert version["run"] == beaten.best_run_id and version["job"] == beaten.pk
    response = api_client.get(version["download_url"])
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert "beaten-v2/model.pkl" in names
