"""API plumbing shared by the apps: the exception handler that maps project errors to 4xx, and a
JSON parser that answers 400 (never 500) to any body it cannot read."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import parsers, status
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .exceptions import TunixRTError


def _too_big() -> Response:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return Response(
        {"detail": f"request body too large: at most {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)"},
        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


def exception_handler(exc, context):
    if isinstance(exc, TunixRTError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return _too_big()
    return drf_exception_handler(exc, context)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but a body nested too deeply for Python's decoder (RecursionError) is a
    400 like any other malformed JSON instead of a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
