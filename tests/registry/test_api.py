"""The registry API: promotion from runs and jobs, models, versions, aliases; scoping and bounds."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from registry.models import AliasChange, ModelVersion, RegisteredModel
from runs.models import Run
from tests.factories import TrialFactory, TuningJobFactory, UserFactory
from traces.models import TraceDataset
from tuning.models import TuningJob

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def promote(client, run, **body):
    return client.post(f"/api/runs/{run.pk}/promote/", {"model": "digits", **body}, format="json")


# --- promoting runs ---------------------------------------------------------------------------------


def test_promote_run_creates_version_one_with_its_lineage_and_files(api_client, user, make_run):
    run = make_run(user, {"model.pkl": b"weights", "eval/evaluation.json": b"{}"}, hyperparameters={"lr": 0.1})
    response = promote(api_client, run, description="first", tags=["baseline"])
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["model"], body["version"], body["run"], body["owner"]) == ("digits", 1, run.pk, user.username)
    assert body["trainer"] == "sklearn-mlp" and body["dataset"] == "digits" and body["hyperparameters"] == {"lr": 0.1}
    assert body["metrics"] == {"accuracy": 0.9, "loss": pytest.approx(0.1)} and body["primary_score"] == 0.9
    assert [f["path"] for f in body["files"]] == ["eval/evaluation.json", "model.pkl"]
    assert body["total_size"] == len(b"weights") + 2
    assert body["description"] == "first" and body["tags"] == ["baseline"] and body["created_by"] == user.username
    assert body["job"] is None and body["download_url"].endswith("/api/models/digits/versions/1/download/")


def test_promote_the_same_run_again_returns_the_existing_version_200(api_client, user, make_run):
    run = make_run(user)
    assert promote(api_client, run).status_code == 201
    again = promote(api_client, run)
    assert again.status_code == 200 and again.json()["version"] == 1
    assert ModelVersion.objects.count() == 1
    assert promote(api_client, make_run(user)).json()["version"] == 2


@pytest.mark.parametrize("status", [Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.FAILED])
def test_promote_a_run_that_did_not_succeed_is_409(api_client, user, make_run, status):
    response = promote(api_client, make_run(user, status=status))
    assert response.status_code == 409 and "only a succeeded run" in response.json()["detail"]


def test_promote_a_run_whose_folder_is_gone_is_409(api_client, user, make_run):
    run = make_run(user)
    shutil.rmtree(run.output_dir)
    response = promote(api_client, run)
    assert response.status_code == 409 and "output folder is gone" in response.json()["detail"]
    assert not ModelVersion.objects.exists()


def test_promote_above_the_size_limit_is_409(api_client, user, make_run, settings):
    settings.TUNIX_RT = {**settings.TUNIX_RT, "REGISTRY_MAX_VERSION_BYTES": 10}
    response = promote(api_client, make_run(user, {"big.bin": b"x" * 11}))
    assert response.status_code == 409 and "REGISTRY_MAX_VERSION_BYTES=10" in response.json()["detail"]


def test_another_users_run_is_404_and_staff_promote_into_the_owners_namespace(user, make_run):
    run = make_run(user)
    assert promote(client_for(UserFactory()), run).status_code == 404
    staff = UserFactory(is_staff=True)
    body = promote(client_for(staff), run).json()
    assert body["owner"] == user.username and body["created_by"] == staff.username


def test_trace_dataset_versions_record_the_dataset_content_hash(api_client, user, make_run):
    TraceDataset.objects.create(name="sums", version=2, content_hash="c" * 64, train_count=1, eval_count=1)
    body = promote(api_client, make_run(user, dataset="sums@2", trainer="tunix-sft")).json()
    assert body["dataset"] == "sums@2" and body["dataset_hash"] == "c" * 64


def test_an_export_folder_is_the_version_with_a_generated_model_card(api_client, user, make_run):
    files = {
        "export/model.safetensors": b"tensors",
        "export/config.json": b"{}",
        "export/tokenizer.json": b"{}",
        "model.npz": b"other weights",
    }
    run = make_run(user, files, trainer="tunix-sft", dataset="addition@1", hyperparameters={"lora_rank": 4})
    body = promote(api_client, run).json()
    assert [f["path"] for f in body["files"]] == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    card = client_for(user).get(body["download_url"])
    archive = zipfile.ZipFile(io.BytesIO(b"".join(card.streaming_content)))
    text = archive.read("digits-v1/README.md").decode()
    assert "# digits v1" in text and "addition@1" in text and '"lora_rank": 4' in text and "accuracy (primary)" in text


# --- promoting jobs ---------------------------------------------------------------------------------


def finished_job(owner, run, **fields) -> TuningJob:
    job = TuningJobFactory(owner=owner, status=TuningJob.Status.SUCCEEDED, best_run=run, **fields)
    if run is not None:
        TrialFactory(job=job, run=run, number=3)
    return job


def test_promote_a_finished_jobs_best_run_records_job_and_trial(api_client, user, make_run):
    run = make_run(user)
    job = finished_job(user, run, name="search")
    body = {"model": "digits", "alias": "champion"}
    response = api_client.post(f"/api/tuning/jobs/{job.pk}/promote/", body, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["run"], body["job"], body["job_name"], body["trial_number"]) == (run.pk, job.pk, "search", 3)
    assert body["aliases"] == ["champion"]
    again = api_client.post(f"/api/tuning/jobs/{job.pk}/promote/", {"model": "digits"}, format="json")
    assert again.status_code == 200 and again.json()["version"] == 1


@pytest.mark.parametrize("status", [TuningJob.Status.CREATED, TuningJob.Status.RUNNING])
def test_promote_a_job_that_has_not_finished_is_409(api_client, user, make_run, status):
    job = finished_job(user, make_run(user))
    TuningJob.objects.filter(pk=job.pk).update(status=status)
    response = api_client.post(f"/api/tuning/jobs/{job.pk}/promote/", {"model": "digits"}, format="json")
    assert response.status_code == 409 and "once it has finished" in response.json()["detail"]


def test_promote_a_job_without_best_run_is_409(api_client, user):
    job = finished_job(user, None)
    response = api_client.post(f"/api/tuning/jobs/{job.pk}/promote/", {"model": "digits"}, format="json")
    assert response.status_code == 409 and "no best run" in response.json()["detail"]


def test_promote_another_users_job_is_404(user, make_run):
    job = finished_job(user, make_run(user))
    response = client_for(UserFactory()).post(f"/api/tuning/jobs/{job.pk}/promote/", {"model": "m"}, format="json")
    assert response.status_code == 404


# --- bounds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "Not A Slug"}, "model"),
        ({"model": "x" * 101}, "model"),
        ({"model": "ok", "alias": "bad alias"}, "alias"),
        ({"model": "ok", "alias": "a" * 51}, "alias"),
        ({"model": "ok", "description": "d" * 5001}, "description"),
        ({"model": "ok", "tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"model": "ok", "tags": ["t" * 51]}, "tags"),
        ({"model": "ok", "version": 3}, "version"),
        ({}, "model"),
    ],
)
def test_promote_bounds_are_400_naming_the_field(api_client, user, make_run, body, field):
    response = api_client.post(f"/api/runs/{make_run(user).pk}/promote/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not ModelVersion.objects.exists()


def test_create_model_201_and_bounds(api_client, user):
    created = api_client.post("/api/models/", {"name": "digits", "description": "a classifier"}, format="json")
    assert created.status_code == 201 and created.json()["version_count"] == 0
    assert api_client.post("/api/models/", {"name": "digits"}, format="json").json() == {
        "name": ["you already have a model named 'digits'"]
    }
    for body, field in [({"name": "No"}, "name"), ({"name": "ok", "tags": []}, "tags"), ({}, "name")]:
        response = api_client.post("/api/models/", body, format="json")
        assert response.status_code == 400 and field in response.json()


def test_model_names_are_per_owner(user, make_run):
    other = UserFactory()
    assert promote(client_for(user), make_run(user)).status_code == 201
    assert promote(client_for(other), make_run(other)).status_code == 201
    assert RegisteredModel.objects.filter(name="digits").count() == 2
    assert [m["owner"] for m in client_for(other).get("/api/models/").json()["results"]] == [other.username]
    staff = client_for(UserFactory(is_staff=True))
    assert staff.get("/api/models/").json()["count"] == 2
    assert staff.get("/api/models/digits/").status_code == 400  # two owners: ?owner= says which
    assert staff.get(f"/api/models/digits/?owner={other.username}").json()["owner"] == other.username


# --- reading ----------------------------------------------------------------------------------------


def test_models_versions_and_version_routes(api_client, user, make_run):
    promote(api_client, make_run(user, score=0.8))
    promote(api_client, make_run(user, score=0.9), alias="champion")
    model = api_client.get("/api/models/digits/").json()
    assert (model["version_count"], model["latest_version"], model["aliases"]) == (2, 2, {"champion": 2})
    versions = api_client.get("/api/models/digits/versions/").json()
    assert [v["version"] for v in versions["results"]] == [2, 1]
    assert api_client.get("/api/models/digits/versions/1/").json()["primary_score"] == 0.8
    assert api_client.get("/api/models/digits/versions/3/").status_code == 404
    assert api_client.get("/api/models/nothing/").status_code == 404


def test_another_users_model_is_404_on_every_route_and_never_listed(user, make_run):
    promote(client_for(user), make_run(user), alias="champion")
    other = client_for(UserFactory())
    for url in ["", "versions/", "versions/1/", "versions/1/download/", "aliases/champion/"]:
        assert other.get(f"/api/models/digits/{url}").status_code == 404, url
    assert other.put("/api/models/digits/aliases/champion/", {"version": 1}, format="json").status_code == 404
    assert other.delete("/api/models/digits/aliases/champion/").status_code == 404
    assert other.get("/api/models/").json()["count"] == 0


# --- aliases ----------------------------------------------------------------------------------------


def test_alias_moves_are_atomic_and_recorded(api_client, user, make_run):
    promote(api_client, make_run(user))
    promote(api_client, make_run(user))
    url = "/api/models/digits/aliases/champion/"
    assert api_client.get(url).status_code == 404
    assert api_client.put(url, {"version": 1}, format="json").json()["version"] == 1
    moved = api_client.put(url, {"version": 2}, format="json")
    assert moved.status_code == 200 and moved.json()["version"] == 2 and moved.json()["aliases"] == ["champion"]
    assert api_client.put(url, {"version": 2}, format="json").status_code == 200  # no move: not recorded
    assert api_client.get(url).json()["version"] == 2
    assert api_client.delete(url).status_code == 204
    assert api_client.get(url).status_code == 404
    history = api_client.get("/api/models/digits/").json()["alias_history"]
    assert [(h["from_version"], h["to_version"], h["changed_by"]) for h in history] == [
        (2, None, user.username),
        (1, 2, user.username),
        (None, 1, user.username),
    ]
    assert AliasChange.objects.count() == 3


@pytest.mark.parametrize(
    ("alias", "body", "field"),
    [
        ("champion", {"version": 9}, "version"),
        ("champion", {"version": 0}, "version"),
        ("champion", {}, "version"),
        ("champion", {"version": 1, "force": True}, "force"),
        ("Bad.Alias", {"version": 1}, "alias"),
        ("a" * 51, {"version": 1}, "alias"),
    ],
)
def test_alias_bounds_are_400_naming_the_field(api_client, user, make_run, alias, body, field):
    promote(api_client, make_run(user))
    response = api_client.put(f"/api/models/digits/aliases/{alias}/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content


# --- downloads and storage ------------------------------------------------------------------------


def download(client, url: str) -> dict[str, bytes]:
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response.streaming
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    return {name: archive.read(name) for name in archive.namelist()}


def test_download_is_a_zip_of_the_manifest_with_matching_sha256s(api_client, user, make_run):
    body = promote(api_client, make_run(user, {"model.pkl": b"weights", "sub/notes.txt": b"hello"})).json()
    files = download(api_client, body["download_url"])
    assert sorted(files) == ["digits-v1/model.pkl", "digits-v1/sub/notes.txt"]
    for entry in body["files"]:
        content = files[f"digits-v1/{entry['path']}"]
        assert hashlib.sha256(content).hexdigest() == entry["sha256"] and len(content) == entry["size"]


def test_identical_files_are_stored_once(api_client, user, make_run, registry_dir: Path):
    promote(api_client, make_run(user, {"model.pkl": b"same", "a.txt": b"one"}))
    promote(api_client, make_run(user, {"model.pkl": b"same", "a.txt": b"two"}))
    blobs = [p for p in registry_dir.rglob("*") if p.is_file()]
    assert len(blobs) == 3  # "same" once, "one", "two"


def test_deleting_the_run_folder_and_the_run_keeps_the_version_downloadable(api_client, user, make_run):
    run = make_run(user, {"model.pkl": b"weights"})
    url = promote(api_client, run).json()["download_url"]
    shutil.rmtree(run.output_dir)
    assert download(api_client, url) == {"digits-v1/model.pkl": b"weights"}
    run_id = run.pk
    run.delete()
    version = api_client.get("/api/models/digits/versions/1/").json()
    assert version["run"] == run_id and version["run_exists"] is False
    assert download(api_client, url) == {"digits-v1/model.pkl": b"weights"}


def test_download_with_missing_files_is_a_clear_410(api_client, user, make_run, registry_dir: Path):
    url = promote(api_client, make_run(user)).json()["download_url"]
    shutil.rmtree(registry_dir)
    response = api_client.get(url)
    assert response.status_code == 410
    assert "missing from the registry storage" in response.json()["detail"]


# --- query counts -----------------------------------------------------------------------------------


def test_models_list_and_versions_list_take_a_fixed_number_of_queries(
    api_client, user, make_run, django_assert_max_num_queries
):
    for name in ("a", "b", "c", "d"):
        for index in range(3):
            promote(api_client, make_run(user), model=name, alias=f"alias-{index}")
    with django_assert_max_num_queries(4):
        assert api_client.get("/api/models/").json()["count"] == 4
    with django_assert_max_num_queries(5):
        assert len(api_client.get("/api/models/a/versions/").json()["results"]) == 3
