"""Registry fixtures: a private registry storage per test, and succeeded runs with files."""

from __future__ import annotations

from pathlib import Path

import pytest

from runs.models import Evaluation, Run
from tests.factories import RunFactory


@pytest.fixture(autouse=True)
def registry_dir(settings, tmp_path) -> Path:
    """Each test's registry storage: a FileSystemStorage in its own folder."""
    folder = tmp_path / "registry-storage"
    settings.STORAGES = {
        **settings.STORAGES,
        "registry": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(folder)}},
    }
    return folder


@pytest.fixture
def make_run(tmp_path):
    """A succeeded run with an evaluation and an output folder holding `files` (path → bytes)."""
    counter = iter(range(1, 10_000))

    def make(owner, files: dict[str, bytes] | None = None, *, score: float = 0.9, details=None, **fields) -> Run:
        output = tmp_path / f"run-output-{next(counter)}"
        output.mkdir()
        for path, content in (files if files is not None else {"model.pkl": b"weights"}).items():
            (output / path).parent.mkdir(parents=True, exist_ok=True)
            (output / path).write_bytes(content)
        fields = {"status": Run.Status.SUCCEEDED, "latest_metrics": {"val_accuracy": score}, **fields}
        run = RunFactory(owner=owner, output_dir=str(output), **fields)
        if run.status == Run.Status.SUCCEEDED:
            Evaluation.objects.create(
                run=run,
                metrics={"accuracy": score, "loss": 1 - score},
                primary_metric="accuracy",
                primary_score=score,
                details=details or [],
            )
        return Run.objects.select_related("evaluation").get(pk=run.pk)

    return make
