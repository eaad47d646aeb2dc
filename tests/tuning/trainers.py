"""Test-only trainers, registered through TUNIX_RT_TRAINERS (see tests/tuning/conftest.py) so the
Celery worker and its Ray trial processes load them too."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from runs.trainers.base import EvaluationResult, HyperParameter, RunContext, Trainer


def hold_gate(job_name: str) -> Path:
    """While this file exists, trials of the job named so with `hold_after_epoch` hold (see
    QuickTrainer). By name, so a test can close the gate before the job exists."""
    from django.conf import settings

    return Path(settings.DATA_DIR) / f"hold-{re.sub(r'[^A-Za-z0-9]+', '-', job_name)}"


class QuickTrainer(Trainer):
    """Does almost no work: reports `score = x * epoch / epochs` every epoch; raises at
    `fail_at_epoch` (0 = never). With `hold_after_epoch` > 0, a run that reaches that epoch once
    another run of its job has ended holds there, reporting, while the job's hold_gate exists:
    a fault test finds finished and running trials whatever the timing. Used for failure tests
    and the overhead benchmark."""

    name = "test-quick"
    datasets = ("none",)
    default_metric = "score"
    default_mode = "max"
    metrics = ("score",)
    hyperparameters = (
        HyperParameter("x", "float", 0.5, low=0.0, high=1.0),
        HyperParameter("epochs", "int", 3, low=1, high=100_000),
        HyperParameter("fail_at_epoch", "int", 0, low=0, high=100_000),
        HyperParameter("epoch_delay_s", "float", 0.0, low=0.0, high=10.0),
        HyperParameter("hold_after_epoch", "int", 0, low=0, high=100_000),
    )

    def train(self, ctx: RunContext) -> Any:
        hp = ctx.hyperparameters
        for epoch in range(1, hp["epochs"] + 1):
            if epoch == hp["fail_at_epoch"]:
                raise ValueError(f"boom at epoch {epoch} (x={hp['x']})")
            metrics = {"score": hp["x"] * epoch / hp["epochs"]}
            ctx.report(epoch, metrics)
            if epoch == hp["hold_after_epoch"]:
                self._hold(ctx, epoch, metrics)
            if hp["epoch_delay_s"]:
                time.sleep(hp["epoch_delay_s"])
        return hp["x"]

    @staticmethod
    def _hold(ctx: RunContext, epoch: int, metrics: dict[str, float]) -> None:
        from runs.models import Run

        job_id, job_name = Run.objects.filter(pk=ctx.run_id).values_list("trial__job_id", "trial__job__name").get()
        others_ended = Run.objects.filter(trial__job_id=job_id, status__in=Run.TERMINAL_STATUSES).exclude(pk=ctx.run_id)
        if not others_ended.exists():
            return
        # Reporting the same epoch again: where Tune stops a trial (the report raises), and a
        # no-op for the run's stored metrics.
        if hold_gate(job_name).exists():
            ctx.log(f"holding at epoch {epoch}")
        while hold_gate(job_name).exists():
            ctx.report(epoch, metrics)
            time.sleep(0.2)

    def evaluate(self, ctx: RunContext, state: Any) -> EvaluationResult:
        return EvaluationResult(metrics={"score": float(state)}, primary_metric="score")


class EnvironmentTrainer(Trainer):
    """Logs the environment the trial process sees (ENV_NAMES), and with `await_running` > 0 waits
    until that many runs of its job have begun while it runs (so they trained at once: a condition,
    not a duration), then reports."""

    name = "test-env"
    datasets = ("none",)
    default_metric = "score"
    default_mode = "max"
    metrics = ("score",)
    hyperparameters = (
        HyperParameter("x", "float", 0.5, low=0.0, high=1.0),
        HyperParameter("await_running", "int", 0, low=0, high=16),
    )
    ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "RAY_USAGE_STATS_ENABLED")
    AWAIT_TIMEOUT_S = 120

    def train(self, ctx: RunContext) -> Any:
        from runs.models import Run

        for name in self.ENV_NAMES:
            ctx.log(f"env {name}={os.environ.get(name, '<unset>')}")
        wanted = ctx.hyperparameters["await_running"]
        if wanted:
            job_id = Run.objects.filter(pk=ctx.run_id).values_list("trial__job_id", flat=True).get()
            deadline = time.monotonic() + self.AWAIT_TIMEOUT_S
            # Runs of the job that began, counted while this one still runs: those that began
            # before it stay counted even if they already ended, so the barrier cannot be missed.
            started = Run.objects.filter(trial__job_id=job_id, started_at__isnull=False)
            while (seen := started.count()) < wanted:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {seen} of {wanted} runs ever trained at once")
                time.sleep(0.1)
            ctx.log(f"saw {seen} runs of job {job_id} begin while this one ran")
        ctx.report(1, {"score": ctx.hyperparameters["x"]})
        return ctx.hyperparameters["x"]

    def evaluate(self, ctx: RunContext, state: Any) -> EvaluationResult:
        return EvaluationResult(metrics={"score": float(state)}, primary_metric="score")


def load_trainers() -> list[Trainer]:
    return [QuickTrainer(), EnvironmentTrainer()]
