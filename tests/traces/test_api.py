from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.factories import UserFactory
from traces.models import TraceDataset
from traces.parsing import MAX_BYTES

GOOD = "\n".join(
    json.dumps({"prompt": f"What is {i}+{i}?", "steps": [f"{i}+{i}={2 * i}"], "final_answer": str(2 * i)})
    for i in range(10)
)


@pytest.mark.django_db
def test_multipart_upload_creates_a_versioned_dataset(api_client):
    response = api_client.post(
        "/api/datasets/",
        {"name": "doubles", "eval_fraction": 0.2, "file": SimpleUploadedFile("d.jsonl", GOOD.encode())},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["reference"], body["train_count"], body["eval_count"]) == ("doubles@1", 8, 2)
    again = api_client.post("/api/datasets/", {"name": "doubles", "content": GOOD}, format="json")
    assert again.json()["reference"] == "doubles@2"


@pytest.mark.django_db
def test_malformed_line_is_a_400_naming_the_line_and_stores_nothing(api_client):
    content = GOOD + "\n{broken\n"
    response = api_client.post("/api/datasets/", {"name": "bad", "content": content}, format="json")
    assert response.status_code == 400
    assert response.json()["file"][0].startswith("line 11: malformed JSON")
    assert not TraceDataset.objects.filter(name="bad").exists()


@pytest.mark.django_db
def test_missing_field_is_a_400_naming_the_line(api_client):
    content = GOOD + "\n" + json.dumps({"prompt": "p", "steps": []})
    response = api_client.post(
        "/api/datasets/", {"name": "bad", "file": SimpleUploadedFile("d.jsonl", content.encode())}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json()["file"] == ["line 11: missing field(s): final_answer"]


@pytest.mark.django_db
def test_too_large_upload_is_a_400(api_client):
    big = (GOOD + "\n") * (MAX_BYTES // len(GOOD) + 1)
    response = api_client.post(
        "/api/datasets/", {"name": "big", "file": SimpleUploadedFile("d.jsonl", big.encode())}, format="multipart"
    )
    assert response.status_code == 400
    assert f"at most {MAX_BYTES} bytes" in response.json()["file"][0]


@pytest.mark.django_db
def test_datasets_are_scoped_to_their_owner_and_builtins_are_listed(api_client, user):
    other = UserFactory()
    from traces.services import trace_dataset_create

    theirs = trace_dataset_create(owner=other, name="theirs", content=GOOD)
    mine = trace_dataset_create(owner=user, name="mine", content=GOOD)

    listed = {d["reference"] for d in api_client.get("/api/datasets/").json()["results"]}
    assert listed == {"addition@1", "mine@1"}
    assert api_client.get(f"/api/datasets/{theirs.pk}/").status_code == 404
    detail = api_client.get(f"/api/datasets/{mine.pk}/").json()
    assert len(detail["eval_sample"]) == detail["eval_count"] == 1
    taken = api_client.post("/api/datasets/", {"name": "theirs", "content": GOOD}, format="json")
    assert taken.status_code == 400 and "name" in taken.json()


@pytest.mark.django_db
def test_import_traces_command_registers_a_file(tmp_path, user):
    from django.core.management import call_command

    path = tmp_path / "d.jsonl"
    path.write_text(GOOD)
    call_command("import_traces", str(path), "--name", "cli-set", "--eval-fraction", "0.3", "--owner", user.username)
    dataset = TraceDataset.objects.get(name="cli-set")
    assert (dataset.owner, dataset.train_count, dataset.eval_count) == (user, 7, 3)
