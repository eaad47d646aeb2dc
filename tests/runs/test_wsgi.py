"""Requests through a real WSGI server: it rejects what Django's test client lets through
(for example a header value that is a str subclass)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.factories import ApiTokenFactory


@pytest.mark.django_db(transaction=True)
def test_create_run_through_a_real_wsgi_server_returns_201_with_location(live_server, user):
    token = ApiTokenFactory(user=user)
    request = urllib.request.Request(
        f"{live_server.url}/api/runs/",
        data=json.dumps({"trainer": "sklearn-mlp", "dataset": "digits"}).encode(),
        headers={"Authorization": f"Token {token.key}", "Content-Type": "application/json"},
        method="POST",
    )

    with urllib.request.urlopen(request) as response:
        assert response.status == 201
        body = json.load(response)
        assert response.headers["Location"].endswith(f"/api/runs/{body['id']}/")
