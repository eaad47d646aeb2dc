"""A Tunix run's version, downloaded from the registry, loads back with Tunix's safetensors loader
and answers the held-out prompts as the run did.

It reads the Tunix trainer's `export/` folder (runs/trainers/tunix/hf_format.py).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from runs import services
from runs.execution import execute_run
from runs.models import Run
from traces.services import trace_dataset_resolve

pytestmark = pytest.mark.django_db


def greedy_outputs(folder: Path, count: int) -> list[str]:
    """Decode the first `count` held-out prompts greedily from a folder, as the trainer's evaluation does."""
    from tunix.models.qwen3 import params as qwen3_params

    from runs.trainers.tunix.data import HFTokenizer
    from runs.trainers.tunix.evaluation import held_out_decoder
    from runs.trainers.tunix.hf_format import config_from_hf

    config = config_from_hf(folder)
    model = qwen3_params.create_model_from_safe_tensors(str(folder), config)
    items = trace_dataset_resolve(reference="addition@1").eval_items[:count]
    return held_out_decoder(model, config, HFTokenizer(str(folder)), items, max_new_tokens=64).decode()


def test_a_downloaded_tunix_version_loads_back_with_the_same_predictions(api_client, user, tmp_path):
    run = services.run_create(
        owner=user,
        trainer="tunix-sft",
        dataset="addition@1",
        hyperparameters={"max_steps": 60, "eval_interval": 60, "eval_items": 20, "learning_rate": 3e-3},
        enqueue=False,
    )
    run = execute_run(run.pk)
    assert run.status == Run.Status.SUCCEEDED, run.error_message

    body = api_client.post(f"/api/runs/{run.pk}/promote/", {"model": "adder"}, format="json").json()
    assert {f["path"] for f in body["files"]} >= {"README.md", "config.json", "model.safetensors", "tokenizer.json"}
    assert body["dataset"] == "addition@1" and body["dataset_hash"]
    response = api_client.get(body["download_url"])
    zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).extractall(tmp_path)
    folder = tmp_path / "adder-v1"

    details = Run.objects.get(pk=run.pk).evaluation.details
    assert greedy_outputs(folder, len(details)) == [d["output"] for d in details]
