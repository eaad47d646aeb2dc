"""The one-click demo: a tuning job of real Tunix trials on the built-in addition traces."""

from __future__ import annotations

from tuning import services as tuning_services
from tuning.models import TuningJob

DEMO_JOB_NAME = "Tunix SFT on addition traces"
DEMO_JOB = {
    "trainer": "tunix-sft",
    "dataset": "addition@1",
    "search_space": {
        "learning_rate": {"type": "loguniform", "low": 3e-4, "high": 1e-2},
        "batch_size": {"type": "choice", "values": [16, 32]},
    },
    "fixed_hyperparameters": {"max_steps": 300, "eval_interval": 50, "eval_items": 100},
    # ASHA on the held-out loss, reported every eval_interval: informative from the first report,
    # whereas exact match stays near 0 for every trial until ~200 steps (ASHA would stop at random).
    "metric": "eval_loss",
    "mode": "min",
    "num_samples": 6,
    "max_concurrent_trials": 2,
    "scheduler": "asha",
    "seed": 0,
}


def demo_job_ensure(*, owner) -> tuple[TuningJob, bool]:
    """The owner's demo job (created, not started), creating it if they have none."""
    existing = TuningJob.objects.filter(owner=owner, name=DEMO_JOB_NAME).order_by("pk").first()
    if existing is not None:
        return existing, False
    return tuning_services.tuning_job_create(owner=owner, name=DEMO_JOB_NAME, **DEMO_JOB), True
