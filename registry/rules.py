"""Bounds on what users name and write in the registry, pure Python: the API, the pages, the
services and a job's `promote_to` (tuning/config.py) all check through these."""

from __future__ import annotations

import re
from typing import Any

from .models import MAX_ALIAS_NAME, MAX_DESCRIPTION, MAX_MODEL_NAME, MAX_TAG_LENGTH, MAX_TAGS

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$")
POLICY_FIELDS = ("model", "alias", "only_if_better")


def slug_check(value: Any, *, max_length: int) -> str:
    """A lower-case slug (letters, digits, `-`, `_`; starting and ending with a letter or digit), or
    ValueError saying what is wrong."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters")
    if not SLUG.match(value):
        raise ValueError("must be lower-case letters, digits, '-' or '_', starting and ending with a letter or digit")
    return value


def model_name_check(value: Any) -> str:
    return slug_check(value, max_length=MAX_MODEL_NAME)


def alias_check(value: Any) -> str:
    return slug_check(value, max_length=MAX_ALIAS_NAME)


def description_check(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if len(value) > MAX_DESCRIPTION:
        raise ValueError(f"must be at most {MAX_DESCRIPTION} characters")
    return value


def tags_check(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ValueError("must be a list of strings")
    if len(value) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    tags: list[str] = []
    for tag in value:
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise ValueError(f"each tag must be 1 to {MAX_TAG_LENGTH} characters")
        if tag not in tags:
            tags.append(tag)
    return tags


def promotion_policy_clean(value: Any) -> dict[str, Any]:
    """A job's `promote_to`: `{"model": NAME, "alias": ALIAS or null, "only_if_better": bool}`
    (alias optional; only_if_better defaults to true), or ValueError naming the part."""
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    unknown = sorted(str(key) for key in value if key not in POLICY_FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: {', '.join(POLICY_FIELDS)})")
    if "model" not in value:
        raise ValueError("model: this field is required")
    try:
        model = model_name_check(value["model"])
    except ValueError as exc:
        raise ValueError(f"model: {exc}") from None
    alias = value.get("alias")
    if alias is not None:
        try:
            alias = alias_check(alias)
        except ValueError as exc:
            raise ValueError(f"alias: {exc}") from None
    only_if_better = value.get("only_if_better", True)
    if not isinstance(only_if_better, bool):
        raise ValueError("only_if_better: must be true or false")
    return {"model": model, "alias": alias, "only_if_better": only_if_better}
