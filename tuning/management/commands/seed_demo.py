"""Create the demo tuning job "Tunix SFT on addition traces" (idempotent; `bootstrap` calls it)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tuning.demo import demo_job_ensure
from tunix_rt.commands import command_owner


class Command(BaseCommand):
    help = 'Create the demo tuning job "Tunix SFT on addition traces" for a user (default: the first admin).'

    def add_arguments(self, parser):
        parser.add_argument("--owner", help="username owning the job")

    def handle(self, *args, owner: str | None, **options):
        user = command_owner(owner, what="the demo job")
        job, created = demo_job_ensure(owner=user)
        verb = "created" if created else "already exists:"
        self.stdout.write(self.style.SUCCESS(f"demo tuning job {verb} #{job.pk} {job.name!r} (start it from its page)"))
