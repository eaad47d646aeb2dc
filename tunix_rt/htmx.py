"""htmx helpers shared by the page views."""

from __future__ import annotations

from django.http import HttpRequest


def wants_fragment(request: HttpRequest) -> bool:
    """An htmx request for a part of the page. A history restore (Back after an htmx URL push,
    with htmx's history cache off) asks for the whole page."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request
