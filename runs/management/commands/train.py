"""Run a training from the terminal: `manage.py train sklearn-mlp --dataset digits --param epochs=5`."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from runs import services
from runs.execution import execute_run
from runs.models import Run
from runs.trainers.registry import get_trainer
from tunix_rt.commands import command_owner
from tunix_rt.exceptions import ValidationError


def parse_param(text: str) -> tuple[str, Any]:
    """`name=value`; the value is read as JSON when it parses (0.01, 64, true), else as a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise CommandError(f"--param {text!r}: expected name=value")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def _errors(exc: ValidationError) -> str:
    def lines(prefix: str, value: Any):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from lines(f"{prefix}.{key}" if prefix else key, item)
        else:
            yield f"  {prefix}: {' '.join(value) if isinstance(value, list) else value}"

    return "\n".join(lines("", exc.as_dict()))


class Command(BaseCommand):
    help = (
        "Create a run and execute it here (not on a worker), with a progress bar over its epochs; print its "
        "evaluation. Exits non-zero when the run does not succeed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("trainer", help="Trainer name (GET /api/trainers/ lists them).")
        parser.add_argument("--dataset", required=True, help="One of the trainer's datasets.")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A hyperparameter; repeat for several. Values are read as JSON when they parse.",
        )
        parser.add_argument("--user", help="Owner of the run (default: the first superuser).")
        parser.add_argument("--name", default="", help="A name for the run.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, trainer: str, dataset: str, param: list[str], user: str | None, name: str, **options):
        owner = self._owner(user)
        hyperparameters = dict(parse_param(text) for text in param)
        try:
            run = services.run_create(
                owner=owner, trainer=trainer, dataset=dataset, hyperparameters=hyperparameters, name=name, enqueue=False
            )
        except ValidationError as exc:
            raise CommandError(f"invalid run:\n{_errors(exc)}") from None
        self.stdout.write(f"run {run.pk}: {trainer} on {dataset} with {json.dumps(run.hyperparameters)}")

        total = get_trainer(trainer).expected_steps(run.hyperparameters)
        progress = tqdm(
            total=total,
            unit="step",
            desc=f"run {run.pk}",
            file=self.stderr._out,  # the raw stream: OutputWrapper would end every refresh with a newline
            disable=options["no_progress"],
            dynamic_ncols=True,
        )

        def on_report(step: int, metrics: dict[str, float]) -> None:
            progress.update(max(0, step - progress.n))
            progress.set_postfix({key: f"{value:.4g}" for key, value in metrics.items()}, refresh=True)

        try:
            run = execute_run(run.pk, on_report=on_report)
        finally:
            progress.close()
        self._print_outcome(run)

    def _owner(self, username: str | None):
        return command_owner(username, what="the run")

    def _print_outcome(self, run: Run) -> None:
        if run.status != Run.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}: {run.error_message}")
        evaluation = run.evaluation
        self.stdout.write(self.style.SUCCESS(f"run {run.pk} succeeded in {run.duration.total_seconds():.1f} s"))
        self.stdout.write(f"evaluation on held-out data (primary: {evaluation.primary_metric}):")
        width = max(len(name) for name in evaluation.metrics)
        for metric, value in evaluation.metrics.items():
            marker = " *" if metric == evaluation.primary_metric else ""
            self.stdout.write(f"  {metric:<{width}}  {value:.6g}{marker}")
        self.stdout.write(f"artifacts: {run.output_dir}")
