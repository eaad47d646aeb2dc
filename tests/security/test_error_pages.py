"""With DEBUG=False, error pages and API error bodies show no stack trace, setting or broker URL."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from tests.factories import ApiTokenFactory, TuningJobFactory, UserFactory

pytestmark = pytest.mark.django_db

LEAKS = ("Traceback", "boom:", "SECRET_KEY", "CELERY_BROKER_URL", "redis://", "filesystem://", "settings.py", 'File "')


def assert_no_leak(response) -> str:
    body = response.content.decode(errors="replace")
    for leak in (*LEAKS, settings.SECRET_KEY, settings.CELERY_BROKER_URL, str(settings.BASE_DIR)):
        assert leak not in body, f"{response.status_code} body shows {leak!r}"
    return body


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False


@pytest.fixture
def signed_in(production):
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory())
    return client


def test_page_404_uses_the_plain_template(signed_in):
    response = signed_in.get("/no/such/page/")
    assert response.status_code == 404
    body = assert_no_leak(response)
    assert "Not found (404)" in body and "it is not yours to see" in body


def test_another_users_job_page_is_the_same_404(signed_in):
    job = TuningJobFactory()
    response = signed_in.get(f"/jobs/{job.pk}/")
    assert response.status_code == 404 and job.name not in assert_no_leak(response)


def test_api_404_is_json(signed_in):
    for url in ("/api/no/such/route/", "/api/tuning/jobs/999999/"):
        response = signed_in.get(url)
        assert response.status_code == 404 and response["Content-Type"] == "application/json", url
        assert "detail" in response.json()
        assert_no_leak(response)


@pytest.mark.urls("tests.security.error_urls")
def test_page_500_shows_nothing_internal(signed_in):
    response = signed_in.get("/boom/")
    assert response.status_code == 500
    body = assert_no_leak(response)
    assert "Server error (500)" in body


@pytest.mark.urls("tests.security.error_urls")
def test_api_500_is_json_and_shows_nothing_internal(production):
    token = ApiTokenFactory(user=UserFactory())
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Token {token.key}")
    for method in ("get", "post"):
        response = getattr(client, method)("/api/boom/")
        assert response.status_code == 500
        assert response["Content-Type"] == "application/json"
        assert_no_leak(response)
        assert response.json() == {"detail": "Server error. It has been logged."}


def test_500_template_needs_no_context():
    from django.template import loader

    html = loader.get_template("500.html").render()
    assert "Server error (500)" in html


def test_403_csrf_failure_shows_nothing_internal(production):
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory())
    response = client.post("/jobs/new/", {"name": "x"})
    assert response.status_code == 403
    assert_no_leak(response)


def test_api_errors_name_fields_but_nothing_internal(production):
    token = ApiTokenFactory(user=UserFactory())
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Token {token.key}")
    for body in ("{not json", '{"search_space": ' + "[" * 10_000 + "]" * 10_000 + "}", '{"name": 5}'):
        response = client.post("/api/tuning/jobs/", body, content_type="application/json")
        assert response.status_code == 400, response.content[:200]
        assert_no_leak(response)
    response = client.post("/api/runs/", "{}", content_type="text/plain")
    assert response.status_code == 415
    assert_no_leak(response)


def test_health_hides_details_from_anonymous_callers(production):
    body = assert_no_leak(Client().get("/health/"))
    assert '"detail"' not in body
