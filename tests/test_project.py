"""Project-level guarantees: the web process stays light; production settings pass the deploy check."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

from tests.conftest import ROOT

HEAVY_MODULES = ["ray", "jax", "sklearn", "tunix", "flax", "torch"]

# Loads the URL configuration (every view, serializer and the admin), renders the trainer list
# through the API view and builds the OpenAPI schema, then reports which heavy modules came in.
WEB_PROCESS = f"""
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.urls import get_resolver
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIRequestFactory, force_authenticate
from runs.api.views import TrainerViewSet

get_resolver().url_patterns
request = APIRequestFactory().get("/api/trainers/")
force_authenticate(request, user=get_user_model()(username="probe", is_staff=True))
response = TrainerViewSet.as_view({{"get": "list"}})(request)
response.render()
assert response.status_code == 200 and len(response.data) >= 2, response.data
SchemaGenerator().get_schema(request=None, public=True)
print(json.dumps([name for name in {HEAVY_MODULES!r} if name in sys.modules]))
"""


def test_web_process_imports_no_ml_library():
    result = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
            "TUNIX_RT_DATA_DIR": str(ROOT / "var" / "test"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_production_settings_pass_the_deploy_check(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DEBUG": "False",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "tunix.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://tunix.example.com",
        "TUNIX_RT_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DEBUG": "False", "TUNIX_RT_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_out_of_bounds_settings_are_refused_naming_the_variable(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TUNIX_RT_LOG_MAX_LINES": "0", "TUNIX_RT_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "TUNIX_RT_LOG_MAX_LINES=0 is out of bounds: it must lie in [100, 1000000]" in result.stderr
