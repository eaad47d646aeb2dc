"""The run heartbeat thread: a running run that reports nothing still shows it is alive."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from runs import services
from runs.execution import execute_run
from runs.models import Run
from runs.trainers.base import EvaluationResult, RunContext, Trainer
from runs.trainers.registry import reset_registry
from tests.conftest import wait_for

release = threading.Event()


class SilentTrainer(Trainer):
    """Reports and logs nothing until the test releases it (a long step, a slow data load)."""

    name = "test-silent"
    datasets = ("none",)
    default_metric = "score"
    default_mode = "max"
    metrics = ("score",)
    hyperparameters = ()

    def train(self, ctx: RunContext) -> Any:
        if not release.wait(120):
            raise RuntimeError("never released")
        return 1.0

    def evaluate(self, ctx: RunContext, state: Any) -> EvaluationResult:
        return EvaluationResult(metrics={"score": state}, primary_metric="score")


@pytest.fixture
def silent_trainer(settings):
    conf = settings.TUNIX_RT
    settings.TUNIX_RT = {
        **conf,
        "HEARTBEAT_INTERVAL_S": 1,
        "TRAINERS": [*conf["TRAINERS"], f"{__name__}.SilentTrainer"],
    }
    reset_registry()
    release.clear()
    yield
    release.set()
    reset_registry()


@pytest.mark.django_db(transaction=True)
def test_heartbeat_of_a_silent_running_run_advances_by_itself_and_stops_with_the_run(silent_trainer, user):
    run = services.run_create(owner=user, trainer="test-silent", dataset="none", enqueue=False)
    executor = threading.Thread(target=execute_run, args=(run.pk,))
    executor.start()
    try:
        beats: set = set()

        def advanced_twice() -> bool:
            row = Run.objects.filter(pk=run.pk).values("status", "heartbeat_at", "last_step").get()
            assert row["last_step"] in (None, 0)  # nothing reported: only the thread writes
            if row["status"] == Run.Status.RUNNING:
                beats.add(row["heartbeat_at"])
            return len(beats) >= 3  # the start, then two heartbeats of the thread

        wait_for(advanced_twice, timeout=60, interval=0.2, message="the heartbeat to advance twice")
    finally:
        release.set()
        executor.join(60)

    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error_message
    wait_for(
        lambda: not any(t.name == f"run-{run.pk}-heartbeat" for t in threading.enumerate()),
        timeout=10,
        message="the heartbeat thread to end with the run",
    )
