"""The `tunix-sft` trainer: supervised fine-tuning with Google Tunix on reasoning traces.

This module stays light (no JAX, no Tunix): the web process imports it to list trainers and
validate hyperparameters. The training code lives in `runs.trainers.tunix.sft`, imported by `train`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from runs.trainers.base import EvaluationResult, HyperParameter, RunContext, Trainer

INSTALL_HINT = (
    "the tunix-sft trainer needs Google Tunix and JAX: install them with "
    "`.venv/bin/pip install -r requirements-tunix.txt` (scripts/run and scripts/test do)"
)
# "": whatever the folder holds (a Hugging Face folder's config.json, else a Tunix RT run's model);
# "tunix-rt": a checkpoint saved by a Tunix RT run (model.npz + model_config.json, byte-level
# tokenizer); the others are Tunix's Qwen3 presets for Hugging Face safetensors checkpoints.
PRETRAINED_CONFIGS = ("", "tunix-rt", "qwen3_0p6b", "qwen3_1p7b", "qwen3_4b", "qwen3_8b")


def pretrained_folder(name: str) -> Path:
    """The checkpoint folder `pretrained_path` names, which must lie inside TUNIX_RT_MODELS_DIR."""
    from django.conf import settings

    root = settings.TUNIX_RT["MODELS_DIR"]
    folder = (root / name).resolve()
    if not folder.is_relative_to(root) or folder == root:
        raise ValueError(f"must name a folder inside the models directory {root} (TUNIX_RT_MODELS_DIR)")
    return folder


class TunixSFTTrainer(Trainer):
    name = "tunix-sft"
    title = "Tunix supervised fine-tuning on reasoning traces"
    description = (
        "Fine-tunes a Qwen3-architecture language model with Tunix's PeftTrainer on a reasoning-trace "
        "dataset (prompt → steps → '#### answer'). By default a tiny randomly initialised model with a "
        "byte-level tokenizer, fully fine-tuned on CPU in seconds; with `pretrained_path` a local Qwen3 "
        "checkpoint, optionally with LoRA (qwix). Reports train/eval loss, perplexity and held-out "
        "exact-match accuracy (greedy decoding with Tunix's Sampler) every `eval_interval` steps; the "
        "final accuracy is the primary score."
    )
    default_metric = "eval_loss"
    default_mode = "min"
    metrics = (
        "train_loss",
        "eval_loss",
        "perplexity",
        "accuracy",
        "answer_token_accuracy",
        "teacher_forced_exact_match",
    )
    # Exact match stays near 0 for every trial until late in training; the teacher-forced accuracy
    # on the completion tokens moves from the first report and sets clearly bad rates apart, but
    # ranks trials with similar good rates only weakly (docs/tunix.md gives the measured rank
    # correlations). ASHA and the median rule use it for `accuracy` jobs.
    early_stopping_metrics = {"accuracy": "answer_token_accuracy"}
    hyperparameters = (
        HyperParameter(
            "learning_rate", "float", 3e-3, "AdamW step size (constant after warm-up).", low=1e-6, high=1.0, log=True
        ),
        HyperParameter("batch_size", "int", 32, "Traces per gradient step.", low=1, high=1024),
        HyperParameter("max_steps", "int", 300, "Gradient steps.", low=1, high=1_000_000),
        HyperParameter("weight_decay", "float", 0.0, "AdamW decoupled weight decay.", low=0.0, high=1.0),
        HyperParameter(
            "max_grad_norm", "float", 0.0, "Clip gradients to this global norm; 0 = no clipping.", low=0.0, high=1000.0
        ),
        HyperParameter(
            "warmup_steps",
            "int",
            0,
            "Linear warm-up steps. A schedule is compiled into the training step, so any value > 0 "
            "recompiles per learning rate (slower trials); 0 keeps one compiled program for all rates.",
            low=0,
            high=100_000,
        ),
        HyperParameter(
            "eval_interval", "int", 50, "Report train/eval loss every this many steps.", low=1, high=100_000
        ),
        HyperParameter("num_layers", "int", 2, "Decoder layers (ignored with pretrained_path).", low=1, high=64),
        HyperParameter("embed_dim", "int", 64, "Model width (ignored with pretrained_path).", low=8, high=8192),
        HyperParameter("hidden_dim", "int", 256, "MLP width (ignored with pretrained_path).", low=8, high=32768),
        HyperParameter("num_heads", "int", 4, "Attention heads (ignored with pretrained_path).", low=1, high=128),
        HyperParameter("num_kv_heads", "int", 2, "Key/value heads; divides num_heads.", low=1, high=128),
        HyperParameter("head_dim", "int", 16, "Width of one attention head.", low=4, high=512),
        HyperParameter("lora_rank", "int", 0, "LoRA rank (qwix); 0 = full fine-tune.", low=0, high=512),
        HyperParameter("lora_alpha", "float", 16.0, "LoRA scaling alpha.", low=0.0, high=1024.0),
        HyperParameter(
            "max_seq_len", "int", 256, "Longest training sequence in tokens; longer traces are cut.", low=16, high=8192
        ),
        HyperParameter("max_new_tokens", "int", 64, "Most tokens generated per held-out prompt.", low=1, high=4096),
        HyperParameter(
            "eval_items",
            "int",
            100,
            "Held-out traces scored (the first N): eval loss and greedy-decoded exact match at every report.",
            low=1,
            high=5000,
        ),
        HyperParameter(
            "pretrained_path",
            "str",
            "",
            "Folder inside the models directory: a Hugging Face Qwen3 checkpoint (config.json, "
            "model.safetensors, tokenizer.json; never downloaded) or a Tunix RT run's model; "
            "empty = tiny random model.",
        ),
        HyperParameter(
            "pretrained_config",
            "str",
            "",
            "Architecture of the checkpoint in pretrained_path: empty = read from the folder "
            "(config.json), 'tunix-rt' = a Tunix RT run's model, else a Tunix Qwen3 preset.",
            choices=PRETRAINED_CONFIGS,
        ),
        HyperParameter("seed", "int", 0, "Weight initialisation and data order.", low=0, high=2**31 - 1),
    )

    def dataset_names(self, user=None) -> tuple[str, ...]:
        from traces.services import trace_dataset_references

        return trace_dataset_references(user)

    def check_combination(self, values: dict[str, Any]) -> None:
        from tunix_rt.exceptions import ValidationError

        errors = {}
        if values["num_heads"] % values["num_kv_heads"]:
            errors["num_kv_heads"] = ["must divide num_heads"]
        if values["pretrained_path"]:
            try:
                pretrained_folder(values["pretrained_path"])
            except ValueError as exc:
                errors["pretrained_path"] = [str(exc)]
        if values["lora_rank"] and not values["pretrained_path"]:
            errors["lora_rank"] = ["LoRA applies to pretrained weights: set pretrained_path, or 0 for a full fine-tune"]
        if errors:
            raise ValidationError("invalid hyperparameters", errors={"hyperparameters": errors})

    def train(self, ctx: RunContext) -> Any:
        return _backend().train(ctx)

    def evaluate(self, ctx: RunContext, state: Any) -> EvaluationResult:
        return _backend().evaluate(ctx, state)


def _backend():
    """The training module (imports JAX and Tunix), or a RuntimeError saying what to install."""
    try:
        return importlib.import_module("runs.trainers.tunix.sft")
    except ImportError as exc:
        raise RuntimeError(f"{INSTALL_HINT} ({exc})") from None


def load_trainers() -> list[Trainer]:
    return [TunixSFTTrainer()]
