"""Template helpers shared by the pages: relative times, durations, metric values, status badges."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


@register.filter
def reltime(value: datetime.datetime | None) -> str:
    """'3 minutes ago', with the absolute time (UTC) in a tooltip; '—' when unset."""
    if value is None:
        return "—"
    absolute = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), absolute, naturaltime(value))


@register.filter
def duration(value: datetime.timedelta | float | int | None) -> str:
    """A compact duration: '4.2 s', '3 min 05 s', '2 h 07 min', '—' when unknown."""
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)
    if seconds < 0:
        seconds = 0.0
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@register.filter
def metric(value: Any) -> str:
    """A metric value with four significant digits; '—' when missing."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


@register.filter
def hpvalue(value: Any) -> str:
    """A hyperparameter value as a user would type it."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


@register.filter
def get_item(mapping: Any, key: str) -> Any:
    if isinstance(mapping, dict):
        return mapping.get(key)
    return None


@register.simple_tag
def percent(part: int | None, whole: int | None) -> int:
    """Integer percentage of part in whole, clamped to 0..100."""
    if not whole or part is None:
        return 0
    return max(0, min(100, int(100 * part / whole)))


@register.simple_tag
def status_badge(status: str, label: str = "") -> str:
    return format_html('<span class="badge badge-{}">{}</span>', status, label or status.replace("_", " "))


@register.simple_tag(takes_context=True)
def query_with(context, **changes: Any) -> str:
    """The current query string with some parameters replaced (None or '' removes them)."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    # The page's own path (not the request's: a POST action may render the page at its own URL).
    path = context.get("page_path") or context["request"].path
    return f"{path}?{encoded}" if encoded else path


@register.simple_tag(takes_context=True)
def sort_link(context, key: str, label: str, target: str = "") -> str:
    """A table header link that sorts by `key`, toggling direction; keeps the other parameters."""
    current = context.get("sort", "")
    new = f"-{key}" if current == key else key
    arrow = " ▲" if current == key else (" ▼" if current == f"-{key}" else "")
    href = query_with(context, sort=new, page=None)
    hx = (
        format_html(' hx-get="{}" hx-target="{}" hx-swap="outerHTML" hx-push-url="true"', href, target)
        if target
        else ""
    )
    cls = "sorted" if current.lstrip("-") == key else ""
    return format_html('<a href="{}" class="{}" data-sort="{}"{}>{}{}</a>', href, cls, key, hx, label, arrow)


@register.filter
def space(spec: Any) -> str:
    """One search-space entry as a person reads it: 'loguniform 0.0001 … 0.1', 'choice 16, 32'."""
    if not isinstance(spec, dict):
        return hpvalue(spec)
    kind = spec.get("type", "?")
    if "values" in spec and isinstance(spec["values"], list):
        return f"{kind} {', '.join(hpvalue(v) for v in spec['values'])}"
    if kind == "fixed":
        return f"fixed {hpvalue(spec.get('value'))}"
    text = f"{kind} {hpvalue(spec.get('low'))} … {hpvalue(spec.get('high'))}"
    if spec.get("step") is not None:
        text += f" step {hpvalue(spec['step'])}"
    if spec.get("q") is not None:
        text += f" q {hpvalue(spec['q'])}"
    if spec.get("log") is True:
        text += " log scale"
    return text
