"""Token pages: the user's tokens with a form to create one, and revoking one. Both call the same
services as the API. A new token's key is shown once, in the answer to its creation."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from tunix_rt.exceptions import ValidationError

from . import services
from .models import ApiToken

# The choices of the page's expiry field, in days; "" means never. The configured default is added.
EXPIRY_CHOICES = (("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("", "Never"))


def _expiry_choices(default: str) -> tuple[tuple[str, str], ...]:
    if any(value == default for value, _ in EXPIRY_CHOICES):
        return EXPIRY_CHOICES
    return ((default, f"{default} days"), *EXPIRY_CHOICES)


def _expiry_days(raw: str) -> int | None:
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError("must be a number of days, or empty for never", field="expires_in_days") from None


def _render(request: HttpRequest, *, status: int = 200, **context) -> HttpResponse:
    default = services.default_expiry_days()
    default = "" if default is None else str(default)
    context = {
        "tokens": ApiToken.objects.for_user(request.user),
        "errors": {},
        "form": {"name": "", "expires_in_days": default},
        "expiry_choices": _expiry_choices(default),
        "name_max_length": ApiToken.NAME_MAX_LENGTH,
        **context,
    }
    return render(request, "accounts/token_list.html", context, status=status)


@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    """The user's API tokens; POST creates one and shows its key this once."""
    if request.method != "POST":
        return _render(request)
    form = {"name": request.POST.get("name", ""), "expires_in_days": request.POST.get("expires_in_days", "")}
    try:
        token, key = services.token_create(
            user=request.user, name=form["name"], expires_in_days=_expiry_days(form["expires_in_days"])
        )
    except ValidationError as exc:
        return _render(request, status=400, errors=exc.as_dict(), form=form)
    # Rendered, not redirected: the key must not travel through a cookie or the session.
    return _render(request, new_token=token, new_key=key)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke one of the user's tokens (another user's is a 404)."""
    token = get_object_or_404(ApiToken.objects.for_user(request.user), pk=pk)
    services.token_revoke(token=token)
    message = f"Revoked the token “{token.name}” ({token.prefix}…): it is refused from now on."
    messages.success(request, message)
    return redirect("token_list")
