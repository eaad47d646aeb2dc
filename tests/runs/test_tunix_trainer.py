"""The real Tunix trainer on the built-in addition traces (tiny Qwen3, CPU, fixed seed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from runs import services
from runs.execution import execute_run
from runs.models import Run

# The default trial (300 steps; bench/tunix_trial.py measures it), decoding 100 held-out pairs.
TRAIN = {"eval_items": 100}


def _run(user, **hyperparameters) -> Run:
    run = services.run_create(
        owner=user, trainer="tunix-sft", dataset="addition@1", hyperparameters=hyperparameters, enqueue=False
    )
    return execute_run(run.pk)


@pytest.mark.django_db
def test_tiny_model_learns_held_out_additions_with_falling_loss(user):
    run = _run(user, **TRAIN)

    assert run.status == Run.Status.SUCCEEDED, run.error_message
    points = list(run.metric_points.order_by("step"))
    assert [p.step for p in points] == [50, 100, 150, 200, 250, 300]
    eval_losses = [p.values["eval_loss"] for p in points]
    assert eval_losses[-1] < 0.5 * eval_losses[0], eval_losses
    assert points[-1].values["train_loss"] < points[0].values["train_loss"]
    # The teacher-forced figures of the eval pass: informative from the first report, and an item
    # with every completion token right is one greedy decoding reproduces.
    token_accuracy = [p.values["answer_token_accuracy"] for p in points]
    assert 0.5 < token_accuracy[0] < token_accuracy[-1] <= 1.0, token_accuracy
    assert all(p.values["teacher_forced_exact_match"] <= p.values["accuracy"] + 0.05 for p in points)
    evaluation = run.evaluation
    assert evaluation.primary_metric == "accuracy"
    assert evaluation.metrics["majority_baseline"] < 0.1
    assert evaluation.primary_score > evaluation.metrics["majority_baseline"] + 0.2, evaluation.metrics
    assert len(evaluation.details) == 100
    assert set(evaluation.details[0]) >= {"prompt", "expected", "predicted", "correct"}
    assert sum(d["correct"] for d in evaluation.details) == round(evaluation.primary_score * 100)
    run_dir = Path(run.output_dir)
    saved = json.loads((run_dir / "model_config.json").read_text())
    assert saved["config"]["num_layers"] == 2 and (run_dir / "model.npz").stat().st_size > 100_000


@pytest.mark.django_db
def test_learning_rate_changes_the_result(user):
    short = {"max_steps": 40, "eval_interval": 20, "eval_items": 20}
    losses = [_run(user, learning_rate=lr, **short).latest_metrics["eval_loss"] for lr in (1e-4, 3e-3)]
    assert losses[0] > losses[1] + 0.5, losses


@pytest.mark.django_db
def test_same_seed_gives_the_same_result_and_the_last_step_is_always_reported(user):
    short = {"max_steps": 25, "eval_interval": 20, "eval_items": 10}
    first, second = _run(user, **short), _run(user, **short)
    assert first.status == Run.Status.SUCCEEDED, first.error_message
    assert list(first.metric_points.values_list("step", flat=True)) == [20, 25]
    assert first.latest_metrics == second.latest_metrics
    assert first.evaluation.details == second.evaluation.details


@pytest.mark.django_db
def test_without_tunix_installed_a_run_fails_saying_what_to_install(user, monkeypatch):
    monkeypatch.setitem(sys.modules, "runs.trainers.tunix.sft", None)  # what `import` sees when JAX is missing

    run = _run(user)

    assert run.status == Run.Status.FAILED
    assert "requirements-tunix.txt" in run.error_message


@pytest.mark.django_db
def test_lora_fine_tunes_a_checkpoint_saved_by_an_earlier_run(user, settings, tmp_path):
    import shutil

    import numpy as np

    settings.TUNIX_RT = {**settings.TUNIX_RT, "MODELS_DIR": tmp_path}
    short = {"max_steps": 40, "eval_interval": 20, "eval_items": 10, "learning_rate": 3e-3}
    base = _run(user, **short)
    assert base.status == Run.Status.SUCCEEDED, base.error_message
    shutil.copytree(base.output_dir, tmp_path / "tiny-addition")

    tuned = _run(user, pretrained_path="tiny-addition", pretrained_config="tunix-rt", lora_rank=4, **short)

    assert tuned.status == Run.Status.SUCCEEDED, tuned.error_message
    assert tuned.log_lines.filter(text__contains="LoRA rank 4").exists()
    base_weights = np.load(Path(base.output_dir) / "model.npz")
    tuned_weights = np.load(Path(tuned.output_dir) / "model.npz")
    adapters = [k for k in tuned_weights.files if "lora" in k]
    assert adapters and set(base_weights.files) < set(tuned_weights.files)
    for name in base_weights.files:  # LoRA trains the adapters only: the checkpoint stays frozen
        np.testing.assert_array_equal(base_weights[name], tuned_weights[name])
    assert any(np.abs(tuned_weights[k]).max() > 0 for k in adapters if k.endswith("lora_b"))  # starts at zero
    # It starts from the trained checkpoint, not from scratch: its first eval loss beats the base run's first.
    first = tuned.metric_points.order_by("step").first().values["eval_loss"]
    assert first < base.metric_points.order_by("step").first().values["eval_loss"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["../../etc", "/etc", "."])
def test_pretrained_path_outside_the_models_directory_is_refused(api_client, path):
    response = api_client.post(
        "/api/runs/",
        {
            "trainer": "tunix-sft",
            "dataset": "addition@1",
            "hyperparameters": {"pretrained_path": path, "pretrained_config": "tunix-rt"},
        },
        format="json",
    )

    assert response.status_code == 400
    assert "pretrained_path" in response.json()["hyperparameters"]
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    ("metric", "scheduler", "ranked_by"),
    [("accuracy", "asha", "answer_token_accuracy"), ("accuracy", "median", "answer_token_accuracy"),
     ("eval_loss", "asha", "eval_loss"), ("accuracy", "fifo", None)],
)  # fmt: skip
def test_early_stopping_of_an_accuracy_job_ranks_trials_by_answer_token_accuracy(metric, scheduler, ranked_by):
    from tuning.models import TuningJob
    from tuning.raytune import runner

    job = TuningJob(trainer="tunix-sft", metric=metric, mode="min" if metric == "eval_loss" else "max")
    job.scheduler, job.search_algorithm = scheduler, "optuna"

    from ray.tune.search.optuna import OptunaSearch

    built = runner._scheduler(job)
    searcher = runner._search_algorithm(job)
    while not isinstance(searcher, OptunaSearch):  # the id-keeping generator and concurrency limiter wrap it
        searcher = searcher.searcher

    if ranked_by is None or ranked_by == metric:  # FIFO stops nothing; eval_loss has no stand-in
        assert not runner._stands_in(job) and built.metric is None  # TuneConfig carries the job's metric
    else:
        assert (built.metric, built._mode) == (ranked_by, "max")
        assert (searcher.metric, searcher.mode) == ("accuracy", "max")  # the search still optimises accuracy


@pytest.mark.django_db
def test_a_tunix_run_stopped_early_is_evaluated_with_the_model_of_its_last_report(user):
    from runs.trainers.base import RunStoppedEarly

    def stop_at_step_20(step: int, metrics: dict) -> None:
        if step >= 20:
            raise RunStoppedEarly()  # what Ray Tune's scheduler does through the trainable

    run = services.run_create(
        owner=user,
        trainer="tunix-sft",
        dataset="addition@1",
        hyperparameters={"max_steps": 200, "eval_interval": 20, "eval_items": 20},
        enqueue=False,
    )
    run = execute_run(run.pk, on_report=stop_at_step_20)

    assert run.status == Run.Status.STOPPED, run.error_message
    assert list(run.metric_points.values_list("step", flat=True)) == [20]
    assert run.evaluation.primary_metric == "accuracy" and len(run.evaluation.details) == 20
    assert run.evaluation.metrics["accuracy"] == run.metric_points.get().values["accuracy"]
    assert (Path(run.output_dir) / "export" / "model.safetensors").is_file()
