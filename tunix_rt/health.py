"""Health endpoint: is the database, the broker and Ray reachable? Open to anonymous callers
(load balancers, monitoring) and cheap; it never imports Ray in the web process."""

from __future__ import annotations

import importlib.util
import socket
import time
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes, throttle_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

TIMEOUT_S = 2.0


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable", reported, not raised
        detail, ok = f"{type(exc).__name__}: {exc}"[:300], False
    return {"ok": ok, "detail": detail, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return connection.vendor


def check_broker() -> str:
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS) as conn:
        conn.ensure_connection(max_retries=1, timeout=TIMEOUT_S)
        return conn.transport_cls if isinstance(conn.transport_cls, str) else conn.transport.driver_name


def check_ray() -> str:
    if importlib.util.find_spec("ray") is None:
        raise RuntimeError("Ray is not installed (pip install -r requirements-tuning.txt)")
    address = settings.RAY_ADDRESS
    if not address or address in ("local", "auto"):
        return "embedded: each tuning worker starts a local Ray"
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    with socket.create_connection((host, port), timeout=TIMEOUT_S):
        return f"cluster at {host}:{port} accepts connections"


_health_response = inline_serializer(
    "Health",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "degraded"]),
        "checks": serializers.DictField(child=serializers.DictField()),
    },
)


@extend_schema(responses={200: _health_response, 503: _health_response}, auth=[])
@api_view(["GET"])
@permission_classes([AllowAny])
@throttle_classes([])
def health(request):
    """Reachability of the database, the Celery broker and Ray. 503 when any is down."""
    checks = {"database": _timed(check_database), "broker": _timed(check_broker), "ray": _timed(check_ray)}
    if not (request.user and request.user.is_staff):
        for check in checks.values():  # details may name hosts and ports: staff only
            del check["detail"]
    healthy = all(c["ok"] for c in checks.values())
    return Response({"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503)
