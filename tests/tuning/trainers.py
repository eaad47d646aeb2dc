"""Test-only trainers, registered through TUNIX_RT_TRAINERS (see tests/tuning/conftest.py) so the
Celery worker and its Ray trial processes load them too."""

from __future__ import annotations

import time
from typing import Any

from runs.trainers.base import EvaluationResult, HyperParameter, RunContext, Trainer


class QuickTrainer(Trainer):
    """Does almost no work: reports `score = x * epoch / epochs` every epoch; raises at
    `fail_at_epoch` (0 = never). Used for failure tests and the overhead benchmark."""

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
    )

    def train(self, ctx: RunContext) -> Any:
        hp = ctx.hyperparameters
        for epoch in range(1, hp["epochs"] + 1):
            if epoch == hp["fail_at_epoch"]:
                raise ValueError(f"boom at epoch {epoch} (x={hp['x']})")
            ctx.report(epoch, {"score": hp["x"] * epoch / hp["epochs"]})
            if hp["epoch_delay_s"]:
                time.sleep(hp["epoch_delay_s"])
        return hp["x"]

    def evaluate(self, ctx: RunContext, state: Any) -> EvaluationResult:
        return EvaluationResult(metrics={"score": float(state)}, primary_metric="score")


def load_trainers() -> list[Trainer]:
    return [QuickTrainer()]
