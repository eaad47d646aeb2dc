"""Prepare a fresh installation: an admin account (password printed once, kept in var/)."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the admin account if none exists, and the demo data."

    def handle(self, *args, **options):
        User = get_user_model()
        password_file = settings.DATA_DIR / "admin-password.txt"
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@localhost", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        admin = User.objects.filter(is_superuser=True).order_by("pk").first()
        if admin is not None:
            call_command("seed_demo", owner=admin.get_username(), stdout=self.stdout)
        if password_file.exists():
            self.stdout.write(
                self.style.SUCCESS(
                    f"Log in as 'admin' with the password in {password_file}: {password_file.read_text().strip()}"
                )
            )
