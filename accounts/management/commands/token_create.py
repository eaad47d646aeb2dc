"""`manage.py token_create <username>`: a new named API token, printed once (replaces drf_create_token)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts import services
from tunix_rt.exceptions import ValidationError


class Command(BaseCommand):
    help = "Create a named API token for a user and print its key (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="manage.py token_create")
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument("--expires-in-days", type=int, help="default: TUNIX_RT_TOKEN_EXPIRY_DAYS")
        expiry.add_argument("--never-expires", action="store_true")

    def handle(self, *args, username: str, name: str, expires_in_days: int | None, never_expires: bool, **options):
        try:
            user = get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {username!r}") from None
        if never_expires:
            days = None
        elif expires_in_days is not None:
            days = expires_in_days
        else:
            days = services.default_expiry_days()
        try:
            _, key = services.token_create(user=user, name=name, expires_in_days=days)
        except ValidationError as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from None
        # The same words as DRF's drf_create_token, so `awk '{print $3}'` in scripts keeps working.
        self.stdout.write(f"Generated token {key} for user {username}")
