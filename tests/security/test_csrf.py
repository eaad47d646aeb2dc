"""CSRF: session-authenticated writes (API, pages, htmx) need the token; token-authenticated API
calls do not."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import ApiTokenFactory, TuningJobFactory, UserFactory
from tests.ui.test_job_form import form_data
from tuning.models import TuningJob

pytestmark = pytest.mark.django_db

GOOD_JOB = {
    "name": "lr search",
    "trainer": "sklearn-mlp",
    "dataset": "digits",
    "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1}},
}


@pytest.fixture
def session():
    user = UserFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return user, client


def _csrf_token(client: Client) -> str:
    """The token a page hands out (base.html puts it in `hx-headers` for htmx)."""
    assert client.get("/jobs/new/").status_code == 200
    return client.cookies["csrftoken"].value


def test_session_api_write_without_token_is_403(session):
    _, client = session
    response = client.post("/api/tuning/jobs/", GOOD_JOB, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert not TuningJob.objects.exists()


def test_session_api_write_with_token_works(session):
    _, client = session
    token = _csrf_token(client)
    response = client.post("/api/tuning/jobs/", GOOD_JOB, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("action", ["start", "cancel", "clone"])
def test_session_api_actions_need_the_token(session, action):
    user, client = session
    job = TuningJobFactory(owner=user)
    assert client.post(f"/api/tuning/jobs/{job.pk}/{action}/").status_code == 403
    job.refresh_from_db()
    assert job.status == TuningJob.Status.CREATED and TuningJob.objects.count() == 1


@pytest.mark.parametrize("action", ["start", "cancel", "clone"])
def test_htmx_page_actions_need_the_token(session, action):
    user, client = session
    job = TuningJobFactory(owner=user)
    assert client.post(f"/jobs/{job.pk}/{action}/", headers={"HX-Request": "true"}).status_code == 403
    job.refresh_from_db()
    assert job.status == TuningJob.Status.CREATED and TuningJob.objects.count() == 1


def test_htmx_page_action_with_the_header_token_works(session):
    user, client = session
    job = TuningJobFactory(owner=user)
    token = _csrf_token(client)
    response = client.post(f"/jobs/{job.pk}/cancel/", headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == TuningJob.Status.CANCELLED


def test_form_post_needs_the_token(session):
    _, client = session
    assert client.post("/jobs/new/", form_data()).status_code == 403
    token = _csrf_token(client)
    assert client.post("/jobs/new/", {**form_data(), "csrfmiddlewaretoken": token}).status_code == 302
    assert TuningJob.objects.count() == 1


def test_session_run_cancel_needs_the_token(session):
    from tests.factories import RunFactory

    user, client = session
    run = RunFactory(owner=user)
    assert client.post(f"/api/runs/{run.pk}/cancel/").status_code == 403


def test_token_authenticated_api_needs_no_csrf():
    user = UserFactory()
    token = ApiTokenFactory(user=user)
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.post("/api/tuning/jobs/", GOOD_JOB, content_type="application/json")
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    assert client.post(f"/api/tuning/jobs/{job_id}/cancel/").status_code == 200


def test_token_endpoint_gives_a_token_for_a_script():
    UserFactory(username="script-user")
    client = Client(enforce_csrf_checks=True)
    response = client.post("/api/auth/token/", {"username": "script-user", "password": "pass-word-123"})
    assert response.status_code == 200 and len(response.json()["token"]) == 40
