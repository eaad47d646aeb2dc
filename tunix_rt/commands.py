"""Pieces the apps' management commands share."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def command_owner(username: str | None, *, what: str = "it"):
    """The user a command acts for: the one named, else the first superuser; CommandError if none."""
    users = get_user_model().objects
    if username:
        user = users.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        return user
    user = users.filter(is_superuser=True).order_by("pk").first()
    if user is None:
        raise CommandError(
            f"no admin yet: run `manage.py bootstrap` first, or name a user (no superuser to own {what})"
        )
    return user
