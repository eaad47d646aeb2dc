"""The OpenAPI schema class: drf-spectacular's, plus the error answers every operation can give
(so a client, and schemathesis, know every status code the API returns)."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema

_ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": '`{"detail": "message"}`, or field name → list of messages.',
            "additionalProperties": True,
        }
    }
}


def _error(description: str) -> dict:
    return {"description": description, "content": _ERROR_BODY}


class AutoSchema(SpectacularAutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        defaults = {"400": _error("Invalid input: field name → messages.")}
        if self.get_auth():
            defaults["401"] = _error("Not authenticated (token authentication).")
            defaults["403"] = _error("Not authenticated (session), or not allowed.")
        if self.path_regex and "{" in self.path or self._is_list_view():
            defaults["404"] = _error("No such object, or not yours; or a page past the end of a list.")
        if self.method == "POST":
            defaults["413"] = _error("Request body larger than DATA_UPLOAD_MAX_MEMORY_SIZE.")
            defaults["415"] = _error("Unsupported media type: send application/json.")
        for code, response in defaults.items():
            responses.setdefault(code, response)
        return responses
