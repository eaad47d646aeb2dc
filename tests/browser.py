"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright for Python, against
pytest-django's live server. No browser is downloaded; a missing Chromium fails the tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (scripts/test does)", pytrace=False)
    # Playwright's sync API keeps an event loop in this thread; the ORM calls the tests make
    # between browser steps are ordinary synchronous calls.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


class PageWatch:
    """Everything a page did that it must not: console errors, failed requests, requests leaving
    the live server."""

    def __init__(self, origin: str):
        self.origin = origin
        self.console_errors: list[str] = []
        self.outside_requests: list[str] = []
        self.expected: list[str] = []

    def on_console(self, message) -> None:
        if message.type in ("error", "warning") and "favicon" not in message.text:
            self.console_errors.append(f"{message.type}: {message.text}")

    def on_request(self, request) -> None:
        url = urlparse(request.url)
        if url.scheme in ("data", "blob", "about"):
            return
        if f"{url.scheme}://{url.netloc}" != self.origin or url.hostname not in ("localhost", "127.0.0.1"):
            self.outside_requests.append(request.url)

    def on_page_error(self, error) -> None:
        self.console_errors.append(f"pageerror: {error}")

    def expect_console_error(self, text: str) -> None:
        """A console error the test itself causes on purpose, e.g. Chromium logging the 400 of a
        form page re-rendered with its errors."""
        self.expected.append(text)

    def assert_clean(self) -> None:
        unexpected = [e for e in self.console_errors if not any(text in e for text in self.expected)]
        assert not unexpected, unexpected
        assert not self.outside_requests, self.outside_requests


@pytest.fixture
def browser_context(browser, live_server):
    context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def _watch(page, origin: str) -> PageWatch:
    watch = PageWatch(origin)
    page.on("console", watch.on_console)
    page.on("request", watch.on_request)
    page.on("pageerror", watch.on_page_error)
    return watch


@pytest.fixture
def signed_in_page(browser_context, live_server, browser_user):
    """A page whose browser context carries a session of `browser_user`; asserts on teardown that
    the page logged no console error and made no request outside the live server."""
    from django.test import Client

    client = Client()
    client.force_login(browser_user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    host = urlparse(live_server.url)
    browser_context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "domain": host.hostname, "path": "/"}]
    )
    page = browser_context.new_page()
    watch = _watch(page, live_server.url)
    page.watch = watch
    yield page
    watch.assert_clean()


@pytest.fixture
def anonymous_page(browser_context, live_server):
    page = browser_context.new_page()
    watch = _watch(page, live_server.url)
    page.watch = watch
    yield page
    watch.assert_clean()


@pytest.fixture
def browser_user(transactional_db):
    from tests.factories import UserFactory

    user = UserFactory()
    user.save()  # UserFactory sets the password without saving it
    return user


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
