"""The answer to a sign-in attempt while django-axes has the account locked (AXES_LOCKOUT_CALLABLE).

Axes counts failures on every `authenticate()` call (the login page, the admin login,
POST /api/auth/token/) and, past AXES_FAILURE_LIMIT, flags the request; its middleware then replaces
the view's response with this one: JSON under /api/, a page elsewhere, both 429 with Retry-After.
"""

from __future__ import annotations

import math
from datetime import timedelta

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from tunix_rt.error_pages import API_PREFIX

LOCKED_STATUS = 429


def duration_text(delta: timedelta) -> str:
    """'15 minutes', '1 minute', '2 hours', '30 seconds'."""
    seconds = max(1, math.ceil(delta.total_seconds()))
    if seconds < 60:
        value, unit = seconds, "second"
    elif seconds < 2 * 3600 or seconds % 3600:
        value, unit = math.ceil(seconds / 60), "minute"
    else:
        value, unit = seconds // 3600, "hour"
    return f"{value} {unit}{'' if value == 1 else 's'}"


def lockout_message(cool_off: timedelta) -> str:
    # Every attempt while locked starts the cool-off again (AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT),
    # so at the moment of this answer the wait is exactly one cool-off period.
    return (
        f"Too many failed sign-in attempts: this account is locked for {duration_text(cool_off)}. "
        "Each further attempt starts the wait again; a staff member can unlock it sooner."
    )


def lockout_response(request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None):
    """JSON `{"detail": ...}` for the API, the locked-out page for the login pages; 429 either way."""
    cool_off = get_cool_off(request)
    message = lockout_message(cool_off)
    if request.path.startswith(API_PREFIX):
        response = JsonResponse({"detail": message}, status=LOCKED_STATUS)
    else:
        response = render(request, "accounts/locked_out.html", {"message": message}, status=LOCKED_STATUS)
    response["Retry-After"] = str(math.ceil(cool_off.total_seconds()))
    return response
