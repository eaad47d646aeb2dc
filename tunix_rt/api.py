"""API plumbing shared by the apps: the exception handler that maps project errors to 4xx."""

from __future__ import annotations

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .exceptions import TunixRTError


def exception_handler(exc, context):
    if isinstance(exc, TunixRTError):
        return Response(exc.as_dict(), status=exc.status_code)
    return drf_exception_handler(exc, context)
