from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.traces.test_api import GOOD
from traces.models import TraceDataset


@pytest.fixture
def client_in(client, user):
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_dataset_page_lists_builtins_and_uploads_a_file(client_in, user):
    page = client_in.get("/datasets/")
    assert page.status_code == 200 and "addition@1" in page.content.decode()

    done = client_in.post("/datasets/", {"name": "page-set", "file": SimpleUploadedFile("d.jsonl", GOOD.encode())})

    assert done.status_code == 302
    assert TraceDataset.objects.get(name="page-set", version=1).owner == user
    assert "page-set@1" in client_in.get("/datasets/").content.decode()


@pytest.mark.django_db
def test_dataset_page_shows_the_bad_line_and_stores_nothing(client_in):
    bad = GOOD + "\n{oops"
    response = client_in.post("/datasets/", {"name": "bad-set", "file": SimpleUploadedFile("d.jsonl", bad.encode())})
    assert response.status_code == 400
    assert "line 11: malformed JSON" in response.content.decode()
    assert not TraceDataset.objects.filter(name="bad-set").exists()
