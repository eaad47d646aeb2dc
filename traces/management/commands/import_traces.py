"""Register a reasoning-trace dataset from a local JSON-lines file (docs/tunix.md)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from traces import services
from traces.parsing import MAX_BYTES
from tunix_rt.commands import command_owner
from tunix_rt.exceptions import ValidationError


class Command(BaseCommand):
    help = "Import a JSON-lines trace dataset as a new version of NAME (owned by --owner, default: the first admin)."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument("--eval-fraction", type=float, default=0.1)
        parser.add_argument("--description", default="")
        parser.add_argument("--owner", help="username owning the dataset")

    def handle(
        self, *args, path: Path, name: str, eval_fraction: float, description: str, owner: str | None, **options
    ):
        user = command_owner(owner, what="the dataset")
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        if path.stat().st_size > MAX_BYTES:
            raise CommandError(f"{path}: {path.stat().st_size} bytes; at most {MAX_BYTES} bytes are allowed")
        try:
            dataset = services.trace_dataset_create(
                owner=user, name=name, content=path.read_bytes(), eval_fraction=eval_fraction, description=description
            )
        except ValidationError as exc:
            raise CommandError(f"{path}: {exc.as_dict()}") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"registered {dataset.reference}: {dataset.train_count} train, {dataset.eval_count} held-out traces"
            )
        )
