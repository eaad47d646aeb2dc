"""The lockout backend: django-axes on every sign-in that comes with a request."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LockoutBackend(AxesStandaloneBackend):
    """Axes' backend, which refuses `authenticate()` calls without a request. Every entry point a
    password guesser can reach (the login page, the admin login, POST /api/auth/token/) passes
    one; a call without one comes from code on the server (a management command, a test client's
    `login`), which axes cannot attribute to a client: it is left to the next backend uncounted."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
