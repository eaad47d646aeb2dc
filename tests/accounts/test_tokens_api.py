"""Named API tokens through the API: create (key shown once, hash stored), list, revoke (refused at
once), expiry, bounds, last use, and POST /api/auth/token/ for existing scripts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import LAST_USED_RESOLUTION, PASSWORD_TOKEN_NAME
from tests.factories import ApiTokenFactory, UserFactory

pytestmark = pytest.mark.django_db

TOKENS = "/api/auth/tokens/"


def _token_client(key: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {key}")


def test_create_returns_the_key_once_and_stores_only_its_hash(api_client, user):
    response = api_client.post(TOKENS, {"name": "nightly sweep"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    key = body["token"]
    assert len(key) == 40 and body["name"] == "nightly sweep" and body["prefix"] == key[:8]
    token = ApiToken.objects.get(pk=body["id"])
    assert token.user == user and token.key_hash == ApiToken.hash_key(key)
    assert key not in {str(value) for value in token.__dict__.values()}
    assert "token" not in api_client.get(f"{TOKENS}{token.pk}/").json()
    assert _token_client(key).get("/api/tuning/jobs/").status_code == 200


def test_new_tokens_expire_after_the_default_unless_told(api_client, settings):
    settings.TUNIX_RT = {**settings.TUNIX_RT, "TOKEN_EXPIRY_DAYS": 30}
    default = api_client.post(TOKENS, {"name": "a"}, format="json").json()
    never = api_client.post(TOKENS, {"name": "b", "expires_in_days": None}, format="json").json()
    week = api_client.post(TOKENS, {"name": "c", "expires_in_days": 7}, format="json").json()
    in_30_days = ApiToken.objects.get(pk=default["id"]).expires_at - timezone.now()
    assert timedelta(days=29, hours=23) < in_30_days <= timedelta(days=30)
    assert never["expires_at"] is None
    assert ApiToken.objects.get(pk=week["id"]).expires_at - timezone.now() <= timedelta(days=7)


def test_list_shows_the_callers_tokens_only_and_never_a_key(api_client, user, django_assert_max_num_queries):
    mine = ApiTokenFactory.create_batch(3, user=user)
    ApiTokenFactory(user=UserFactory(), name="someone else's")
    with django_assert_max_num_queries(3):
        body = api_client.get(TOKENS).json()
    assert {t["id"] for t in body["results"]} == {t.pk for t in mine}
    assert set(body["results"][0]) == {"id", "name", "prefix", "created_at", "last_used_at", "expires_at"}


def test_another_users_token_is_a_404_and_survives(api_client):
    theirs = ApiTokenFactory(user=UserFactory())
    assert api_client.get(f"{TOKENS}{theirs.pk}/").status_code == 404
    assert api_client.delete(f"{TOKENS}{theirs.pk}/").status_code == 404
    assert ApiToken.objects.filter(pk=theirs.pk).exists()


def test_staff_see_only_their_own_tokens_through_the_api():
    staff = UserFactory(is_staff=True, is_superuser=True)
    theirs = ApiTokenFactory(user=UserFactory())
    client = APIClient()
    client.force_authenticate(staff)
    assert client.get(TOKENS).json()["results"] == []
    assert client.delete(f"{TOKENS}{theirs.pk}/").status_code == 404


def test_a_revoked_token_is_refused_at_once():
    token = ApiTokenFactory()
    client = _token_client(token.key)
    assert client.get("/api/tuning/jobs/").status_code == 200
    assert client.delete(f"{TOKENS}{token.pk}/").status_code == 204  # revoking itself
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    response = client.get("/api/tuning/jobs/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"


def test_revoking_one_token_leaves_the_others_working(api_client, user):
    keep, drop = ApiTokenFactory(user=user), ApiTokenFactory(user=user)
    assert api_client.delete(f"{TOKENS}{drop.pk}/").status_code == 204
    assert _token_client(drop.key).get(TOKENS).status_code == 401
    assert _token_client(keep.key).get(TOKENS).status_code == 200


def test_an_expired_token_is_refused():
    token = ApiTokenFactory(expires_at=timezone.now() - timedelta(seconds=1))
    response = _token_client(token.key).get("/api/tuning/jobs/")
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_an_inactive_users_token_is_refused():
    token = ApiTokenFactory(user=UserFactory(is_active=False))
    assert _token_client(token.key).get("/api/tuning/jobs/").status_code == 401


def test_last_used_is_written_at_most_once_a_minute(django_assert_num_queries):
    token = ApiTokenFactory()
    client = _token_client(token.key)
    client.get(TOKENS)
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=10)
    client.get(TOKENS)
    token.refresh_from_db()
    assert token.last_used_at == first  # within the minute: no write
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - LAST_USED_RESOLUTION - timedelta(seconds=1))
    client.get(TOKENS)
    token.refresh_from_db()
    assert token.last_used_at > first


def test_a_request_within_the_minute_does_not_write(django_assert_num_queries):
    token = ApiTokenFactory(last_used_at=timezone.now())
    client = _token_client(token.key)
    # The token (with its user), the page count, the page: no UPDATE.
    with django_assert_num_queries(3):
        assert client.get(TOKENS).status_code == 200


BOUNDS = [
    ("name too long", {"name": "x" * (ApiToken.NAME_MAX_LENGTH + 1)}, "name"),
    ("blank name", {"name": ""}, "name"),
    ("whitespace name", {"name": "   "}, "name"),
    ("missing name", {}, "name"),
    ("name not a string", {"name": 7}, "name"),
    ("expiry zero", {"name": "a", "expires_in_days": 0}, "expires_in_days"),
    ("expiry too far", {"name": "a", "expires_in_days": 3651}, "expires_in_days"),
    ("expiry a string", {"name": "a", "expires_in_days": "7"}, "expires_in_days"),
    ("unknown field", {"name": "a", "key": "mine"}, "key"),
]


@pytest.mark.parametrize(("case", "body", "field"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_bounds_are_a_400_naming_the_field(api_client, case, body, field):
    response = api_client.post(TOKENS, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not ApiToken.objects.exists()


def test_tokens_per_user_are_capped_with_a_400_naming_the_field(api_client, user, settings):
    settings.TUNIX_RT = {**settings.TUNIX_RT, "MAX_TOKENS_PER_USER": 3}
    ApiTokenFactory.create_batch(3, user=user)
    response = api_client.post(TOKENS, {"name": "one too many"}, format="json")
    assert response.status_code == 400 and "revoke one first" in response.json()["name"][0]
    assert ApiToken.objects.for_user(user).count() == 3
    ApiTokenFactory(user=UserFactory())  # another user's tokens do not count
    ApiToken.objects.for_user(user).filter(pk=ApiToken.objects.for_user(user).first().pk).update(
        expires_at=timezone.now() - timedelta(days=1)
    )  # an expired token gives its place up
    assert api_client.post(TOKENS, {"name": "fits again"}, format="json").status_code == 201
    assert ApiToken.objects.for_user(user).count() == 3


# --- POST /api/auth/token/: what existing scripts call -------------------------------------------


@pytest.fixture
def script_user():
    user = UserFactory(username="script-user")
    user.save()
    return user


@pytest.mark.parametrize("content_type", ["form", "json"])
def test_password_sign_in_returns_a_working_named_token(script_user, content_type):
    credentials = {"username": "script-user", "password": "pass-word-123"}
    client = Client()
    if content_type == "json":
        response = client.post("/api/auth/token/", credentials, content_type="application/json")
    else:
        response = client.post("/api/auth/token/", credentials)
    assert response.status_code == 200 and set(response.json()) == {"token"}
    key = response.json()["token"]
    assert ApiToken.objects.get(key_hash=ApiToken.hash_key(key)).name == PASSWORD_TOKEN_NAME
    assert _token_client(key).get("/api/tuning/jobs/").status_code == 200
    assert "sessionid" not in response.cookies


def test_password_sign_in_may_name_its_token(script_user):
    response = Client().post("/api/auth/token/", {"username": "script-user", "password": "pass-word-123", "name": "ci"})
    assert ApiToken.objects.get(key_hash=ApiToken.hash_key(response.json()["token"])).name == "ci"


def test_password_sign_in_with_a_wrong_password_is_a_400(script_user):
    response = Client().post("/api/auth/token/", {"username": "script-user", "password": "nope"})
    assert response.status_code == 400 and "non_field_errors" in response.json()
    assert not ApiToken.objects.exists()


def test_the_management_command_prints_a_working_key(script_user):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("token_create", "script-user", "--never-expires", stdout=out)
    key = out.getvalue().split()[2]
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    assert token.user == script_user and token.expires_at is None
    assert _token_client(key).get("/api/tuning/jobs/").status_code == 200
