"""Promotion by policy: a job's `promote_to`, applied when the job ends (tuning_job_finalize)."""

from __future__ import annotations

import shutil

import pytest

from registry import services
from registry.models import ModelAlias, ModelVersion
from tests.factories import TrialFactory, TuningJobFactory
from tuning.config import JobConfig
from tuning.models import Trial, TuningJob
from tuning.services import tuning_job_finalize
from tunix_rt.exceptions import ValidationError

pytestmark = pytest.mark.django_db


def running_job(owner, run, *, policy, mode="max") -> TuningJob:
    """A running job whose one trial succeeded with `run`; finalize then ends it succeeded."""
    job = TuningJobFactory(owner=owner, status=TuningJob.Status.RUNNING, promote_to=policy, mode=mode)
    TrialFactory(job=job, run=run, status=Trial.Status.SUCCEEDED, best_metric_value=run.latest_metrics["val_accuracy"])
    return job


def champion(user, make_run, score: float) -> ModelVersion:
    version, _ = services.model_version_promote(
        run=make_run(user, score=score), by=user, model_name="digits", alias="champion"
    )
    return version


POLICY = {"model": "digits", "alias": "champion", "only_if_better": True}


def test_a_better_best_run_moves_the_alias(user, make_run):
    old = champion(user, make_run, 0.80)
    job = tuning_job_finalize(job_id=running_job(user, make_run(user, score=0.95), policy=POLICY).pk)
    assert job.status == TuningJob.Status.SUCCEEDED
    assert ModelAlias.objects.get(name="champion").version.version == 2
    assert job.promotion_note == (
        f"Promoted run {job.best_run_id} as digits v2. Alias champion moved from v{old.version} to v2: "
        "val_accuracy 0.95 beats 0.8 (max)."
    )
    assert TuningJob.objects.get(pk=job.pk).promotion_note == job.promotion_note
    change = ModelAlias.objects.get(name="champion").model.alias_changes.first()
    assert (change.from_version, change.to_version, change.reason) == (
        1,
        2,
        f"job {job.pk}: val_accuracy 0.95 beats 0.8 (max)",
    )


def test_a_worse_best_run_is_promoted_but_the_alias_stays(user, make_run):
    champion(user, make_run, 0.99)
    job = tuning_job_finalize(job_id=running_job(user, make_run(user, score=0.95), policy=POLICY).pk)
    assert ModelVersion.objects.filter(model__name="digits").count() == 2
    assert ModelAlias.objects.get(name="champion").version.version == 1
    assert "Alias champion stays on v1: val_accuracy 0.95 does not beat 0.99 (max)." in job.promotion_note


def test_min_mode_compares_the_other_way(user, make_run):
    champion(user, make_run, 0.99)  # val_accuracy as if it were a loss: lower is better
    job = tuning_job_finalize(job_id=running_job(user, make_run(user, score=0.95), policy=POLICY, mode="min").pk)
    assert ModelAlias.objects.get(name="champion").version.version == 2
    assert "beats 0.99 (min)" in job.promotion_note


def test_without_only_if_better_the_alias_always_moves(user, make_run):
    champion(user, make_run, 0.99)
    policy = {**POLICY, "only_if_better": False}
    job = tuning_job_finalize(job_id=running_job(user, make_run(user, score=0.5), policy=policy).pk)
    assert ModelAlias.objects.get(name="champion").version.version == 2
    assert "Alias champion moved from v1 to v2." in job.promotion_note


def test_a_new_alias_is_set_and_no_alias_only_promotes(user, make_run):
    job = tuning_job_finalize(job_id=running_job(user, make_run(user), policy=POLICY).pk)
    assert job.promotion_note.endswith("Alias champion moved to v1.")
    job = tuning_job_finalize(job_id=running_job(user, make_run(user), policy={"model": "other"}).pk)
    assert job.promotion_note == f"Promoted run {job.best_run_id} as other v1."


def test_a_registry_failure_never_fails_the_job_and_is_written_to_the_note(user, make_run):
    run = make_run(user)
    shutil.rmtree(run.output_dir)
    job = tuning_job_finalize(job_id=running_job(user, run, policy=POLICY).pk)
    assert job.status == TuningJob.Status.SUCCEEDED
    assert job.promotion_note.startswith("Promotion failed: ") and "output folder is gone" in job.promotion_note
    assert not ModelVersion.objects.exists()


def test_a_failed_job_promotes_nothing(user, make_run):
    job = running_job(user, make_run(user), policy=POLICY)
    job = tuning_job_finalize(job_id=job.pk, error="boom")
    assert job.status == TuningJob.Status.FAILED and job.promotion_note == ""
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"alias": "x"}, "model: this field is required"),
        ({"model": "Bad Name"}, "model: must be lower-case"),
        ({"model": "ok", "alias": "x" * 51}, "alias: must be at most 50 characters"),
        ({"model": "ok", "only_if_better": "yes"}, "only_if_better: must be true or false"),
        ({"model": "ok", "when": "always"}, "unknown field 'when'"),
        ("digits", "must be a JSON object"),
    ],
)
def test_promote_to_is_validated_by_the_job_config(user, policy, message):
    data = {
        "name": "j",
        "trainer": "sklearn-mlp",
        "dataset": "digits",
        "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
        "promote_to": policy,
    }
    with pytest.raises(ValidationError) as raised:
        JobConfig.validate(data, owner=user)
    assert message in raised.value.as_dict()["promote_to"][0]


def test_promote_to_is_normalised_and_kept_by_the_api(api_client):
    body = {
        "name": "j",
        "trainer": "sklearn-mlp",
        "dataset": "digits",
        "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
        "promote_to": {"model": "digits", "alias": "champion"},
    }
    created = api_client.post("/api/tuning/jobs/", body, format="json").json()
    assert created["promote_to"] == {"model": "digits", "alias": "champion", "only_if_better": True}
    assert created["promotion_note"] == ""
    bad = api_client.post("/api/tuning/jobs/", {**body, "promote_to": {"model": "Bad"}}, format="json")
    assert bad.status_code == 400 and "promote_to" in bad.json()
