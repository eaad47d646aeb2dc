"""Project exceptions that services raise and the API and pages turn into clear 4xx answers."""

from __future__ import annotations


class TunixRTError(Exception):
    status_code = 400
    default_code = "error"

    def __init__(self, message: str, *, field: str | None = None, errors: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = errors

    def as_dict(self) -> dict:
        if self.errors is not None:
            return self.errors
        if self.field is not None:
            return {self.field: [self.message]}
        return {"detail": self.message}


class ValidationError(TunixRTError):
    status_code = 400
    default_code = "invalid"


class InvalidTransition(TunixRTError):
    """The object's current state forbids the requested action (HTTP 409)."""

    status_code = 409
    default_code = "conflict"


class ServiceUnavailable(TunixRTError):
    """A dependency (broker, Ray) is missing or unreachable (HTTP 503)."""

    status_code = 503
    default_code = "unavailable"


class LimitExceeded(TunixRTError):
    status_code = 429
    default_code = "limit"
