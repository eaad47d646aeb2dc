"""Password guessing: django-axes locks an account after AXES_FAILURE_LIMIT failed sign-ins on the
login page, the admin login and POST /api/auth/token/ alike; the answer says so and for how long;
staff unlock it (a management command, or deleting the attempt in the admin)."""

from __future__ import annotations

from dataclasses import dataclass

import environ
import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client

from accounts.lockout import duration_text
from tests.factories import UserFactory
from tunix_rt.settings import _lockout_parameters

pytestmark = pytest.mark.django_db

PASSWORD = "pass-word-123"
LOCKED = "this account is locked for 15 minutes"


@dataclass(frozen=True)
class EntryPoint:
    name: str
    url: str
    api: bool = False
    staff: bool = False

    def attempt(self, client: Client, username: str, password: str):
        data = {"username": username, "password": password}
        if self.staff:
            data["next"] = "/admin/"
        return client.post(self.url, data)

    def refused(self, response) -> bool:
        """A plain refusal: the form again (200) or the API's 400, no word of a lock."""
        body = response.content.decode()
        return response.status_code == (400 if self.api else 200) and "locked" not in body

    def signed_in(self, response) -> bool:
        if self.api:
            return response.status_code == 200 and len(response.json()["token"]) == 40
        return response.status_code == 302

    def locked_message(self, response) -> str:
        assert response.status_code == 429, response.content[:300]
        assert response["Retry-After"] == "900"
        if self.api:
            assert response["Content-Type"] == "application/json"
            return response.json()["detail"]
        return response.content.decode()


ENTRY_POINTS = [
    EntryPoint("login page", "/accounts/login/"),
    EntryPoint("admin login", "/admin/login/", staff=True),
    EntryPoint("token endpoint", "/api/auth/token/", api=True),
]


@pytest.fixture(params=ENTRY_POINTS, ids=lambda e: e.name)
def entry(request) -> EntryPoint:
    return request.param


@pytest.fixture
def account(entry):
    user = UserFactory(is_staff=entry.staff)
    user.save()  # UserFactory sets the password without saving it
    return user


def _fail(entry: EntryPoint, client: Client, username: str, times: int) -> list:
    return [entry.attempt(client, username, "wrong-guess") for _ in range(times)]


def test_wrong_passwords_below_the_limit_are_plain_refusals(entry, account, client, settings):
    responses = _fail(entry, client, account.username, settings.AXES_FAILURE_LIMIT - 1)
    assert all(entry.refused(r) for r in responses)
    assert entry.signed_in(entry.attempt(client, account.username, PASSWORD))


def test_the_limit_th_failure_locks_the_account_and_says_for_how_long(entry, account, client, settings):
    *_, last = _fail(entry, client, account.username, settings.AXES_FAILURE_LIMIT)
    message = entry.locked_message(last)
    assert LOCKED in message and "staff member can unlock" in message


def test_the_right_password_is_refused_while_locked(entry, account, client, settings):
    _fail(entry, client, account.username, settings.AXES_FAILURE_LIMIT)
    response = entry.attempt(Client(), account.username, PASSWORD)  # a fresh client: the lock is the account's
    assert LOCKED in entry.locked_message(response)
    assert "_auth_user_id" not in client.session


def test_a_staff_unlock_by_command_lets_the_right_password_in(entry, account, client, settings):
    _fail(entry, client, account.username, settings.AXES_FAILURE_LIMIT)
    call_command("axes_reset_username", account.username)
    assert entry.signed_in(entry.attempt(client, account.username, PASSWORD))


def test_a_staff_unlock_in_the_admin_lets_the_right_password_in(entry, account, client, settings):
    _fail(entry, client, account.username, settings.AXES_FAILURE_LIMIT)
    attempt = AccessAttempt.objects.get(username=account.username)
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    assert staff.get("/admin/axes/accessattempt/").status_code == 200
    response = staff.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not AccessAttempt.objects.exists()
    assert entry.signed_in(entry.attempt(client, account.username, PASSWORD))


def test_the_lock_is_per_account(entry, account, client, settings):
    _fail(entry, client, account.username, settings.AXES_FAILURE_LIMIT)
    neighbour = UserFactory(is_staff=entry.staff)
    neighbour.save()
    assert entry.signed_in(entry.attempt(client, neighbour.username, PASSWORD))


def test_a_successful_sign_in_clears_the_count(entry, account, client, settings):
    below = settings.AXES_FAILURE_LIMIT - 1
    _fail(entry, client, account.username, below)
    assert entry.signed_in(entry.attempt(Client(), account.username, PASSWORD))
    assert all(entry.refused(r) for r in _fail(entry, Client(), account.username, below))


def test_the_login_page_lockout_is_a_page_with_the_message(client, settings):
    user = UserFactory()
    user.save()
    _fail(ENTRY_POINTS[0], client, user.username, settings.AXES_FAILURE_LIMIT - 1)
    response = client.post("/accounts/login/", {"username": user.username, "password": "wrong"})
    assert response.status_code == 429
    assert "<h1>Account locked</h1>" in response.content.decode()
    assert any(t.name == "accounts/locked_out.html" for t in response.templates)


def test_the_limit_and_cool_off_come_from_settings(client, settings):
    settings.AXES_FAILURE_LIMIT = 2
    user = UserFactory()
    user.save()
    entry = ENTRY_POINTS[2]
    first, second = _fail(entry, client, user.username, 2)
    assert entry.refused(first) and second.status_code == 429


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30, "30 seconds"), (60, "1 minute"), (900, "15 minutes"), (5400, "90 minutes"), (7200, "2 hours")],
)
def test_duration_text(seconds, text):
    from datetime import timedelta

    assert duration_text(timedelta(seconds=seconds)) == text


def test_lockout_by_parses_pairs_and_refuses_unknown_names():
    assert _lockout_parameters(["username", "ip_address"]) == ["username", "ip_address"]
    assert _lockout_parameters(["username+ip_address"]) == [["username", "ip_address"]]
    with pytest.raises(environ.ImproperlyConfigured, match="TUNIX_RT_LOGIN_LOCKOUT_BY"):
        _lockout_parameters(["user_agent"])
