"""Create the demo tuning job "Tunix SFT on addition traces" (idempotent; `bootstrap` calls it)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tuning.demo import demo_job_ensure


class Command(BaseCommand):
    help = 'Create the demo tuning job "Tunix SFT on addition traces" for a user (default: the first admin).'

    def add_arguments(self, parser):
        parser.add_argument("--owner", help="username owning the job")

    def handle(self, *args, owner: str | None, **options):
        User = get_user_model()
        users = User.objects.filter(username=owner) if owner else User.objects.filter(is_superuser=True)
        user = users.order_by("pk").first()
        if user is None:
            raise CommandError(f"no user named {owner!r}" if owner else "no admin yet: run `manage.py bootstrap`")
        job, created = demo_job_ensure(owner=user)
        verb = "created" if created else "already exists:"
        self.stdout.write(self.style.SUCCESS(f"demo tuning job {verb} #{job.pk} {job.name!r} (start it from its page)"))
