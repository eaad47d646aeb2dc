from __future__ import annotations

import pytest
from rest_framework.test import APIClient


@pytest.mark.django_db
def test_health_reports_database_broker_and_ray_to_anonymous_callers():
    response = APIClient().get("/health/")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "ray"}
    assert all(check["ok"] and "detail" not in check for check in body["checks"].values())


@pytest.mark.django_db
def test_health_is_503_when_the_broker_is_down_and_hides_its_address(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = APIClient().get("/health/")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db
def test_health_shows_details_to_staff(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)

    checks = client.get("/health/").json()["checks"]

    assert checks["database"]["detail"] in ("sqlite", "postgresql")
