"""The tokens page: list, create (key shown once), revoke; the admin revokes anyone's."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import ApiToken
from tests.factories import ApiTokenFactory, UserFactory

pytestmark = pytest.mark.django_db

PAGE = "/accounts/tokens/"


@pytest.fixture
def signed_in(user, client):
    client.force_login(user)
    return client


def test_the_navigation_links_to_the_tokens_page(signed_in):
    assert f'href="{PAGE}"' in signed_in.get("/").content.decode()


def test_the_page_lists_own_tokens_with_their_dates(signed_in, user, django_assert_max_num_queries):
    ApiTokenFactory(user=user, name="nightly sweep")
    ApiTokenFactory(user=UserFactory(), name="someone else's")
    with django_assert_max_num_queries(6):
        body = signed_in.get(PAGE).content.decode()
    assert "nightly sweep" in body and "someone else's" not in body
    assert "Last used" in body and "Expires" in body and "never" in body


def test_creating_shows_the_key_once(signed_in, user):
    response = signed_in.post(PAGE, {"name": "from the page", "expires_in_days": "30"})
    assert response.status_code == 200
    key = response.context["new_key"]
    token = ApiToken.objects.get(user=user)
    assert token.name == "from the page" and token.key_hash == ApiToken.hash_key(key)
    assert key in response.content.decode()
    assert key not in signed_in.get(PAGE).content.decode()
    assert Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/tuning/jobs/").status_code == 200


def test_creating_with_never_has_no_expiry(signed_in, user):
    signed_in.post(PAGE, {"name": "forever", "expires_in_days": ""})
    assert ApiToken.objects.get(user=user).expires_at is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a", "expires_in_days": "soon"}, "expires_in_days"),
        ({"name": "a", "expires_in_days": "0"}, "expires_in_days"),
    ],
)
def test_a_bad_form_is_a_400_naming_the_field_and_creates_nothing(signed_in, data, field):
    response = signed_in.post(PAGE, data)
    assert response.status_code == 400
    assert field in response.context["errors"]
    assert not ApiToken.objects.exists()


def test_revoking_from_the_page_refuses_the_token_at_once(signed_in, user):
    token = ApiTokenFactory(user=user, name="old laptop")
    api = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get("/api/tuning/jobs/").status_code == 200
    response = signed_in.post(f"{PAGE}{token.pk}/revoke/", follow=True)
    assert response.redirect_chain[-1][0] == PAGE
    assert "Revoked the token “old laptop”" in response.content.decode()
    assert api.get("/api/tuning/jobs/").status_code == 401


def test_revoking_another_users_token_is_a_404(signed_in):
    theirs = ApiTokenFactory(user=UserFactory())
    assert signed_in.post(f"{PAGE}{theirs.pk}/revoke/").status_code == 404
    assert ApiToken.objects.filter(pk=theirs.pk).exists()


def test_revoke_needs_a_post(signed_in, user):
    token = ApiTokenFactory(user=user)
    assert signed_in.get(f"{PAGE}{token.pk}/revoke/").status_code == 405


def test_the_page_needs_a_sign_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_an_administrator_revokes_any_token_in_the_admin(admin_client):
    token = ApiTokenFactory(user=UserFactory(), name="leaked")
    listing = admin_client.get("/admin/accounts/apitoken/").content.decode()
    assert "leaked" in listing and token.prefix in listing
    response = admin_client.post(
        "/admin/accounts/apitoken/", {"action": "delete_selected", "_selected_action": [token.pk], "post": "yes"}
    )
    assert response.status_code == 302
    assert not ApiToken.objects.exists()
    assert Client(HTTP_AUTHORIZATION=f"Token {token.key}").get("/api/tuning/jobs/").status_code == 401


def test_the_admin_cannot_add_a_token(admin_client):
    assert admin_client.get("/admin/accounts/apitoken/add/").status_code == 403
