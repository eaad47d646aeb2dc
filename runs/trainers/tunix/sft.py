"""Training and evaluation code of the `tunix-sft` trainer. Imports JAX and Tunix: only the
worker process that executes a run imports this module (through `TunixSFTTrainer.train`)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax
from absl import logging as absl_logging
from django.conf import settings
from flax import nnx
from tunix.sft import hooks as hooks_lib
from tunix.sft import peft_trainer

from runs.trainers.base import EvaluationResult, RunContext, RunStoppedEarly
from traces.parsing import extract_answer
from traces.services import trace_dataset_resolve

from . import hf_format
from .checkpoint import build_model, hf_checkpoint, save
from .data import (
    ByteTokenizer,
    HFTokenizer,
    encode_split,
    eval_batches,
    example_length,
    model_inputs,
    round_up,
    train_batches,
)
from .evaluation import Decoder, exact_match, held_out_decoder, loss_and_answer_hits
from .trainer import pretrained_folder

MAX_DETAILS = 200
MAX_DETAIL_CHARS = 500
_jax_configured = False


def _configure_jax() -> None:
    """Persistent compile cache before anything compiles (saves ~8 s per run once warm)."""
    global _jax_configured
    if _jax_configured:
        return
    cache_dir = settings.DATA_DIR / "jax-cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _jax_configured = True


@dataclass
class TrainedModel:
    model: Any
    tokenizer: Any
    config: Any
    eval_items: list[dict]
    final_eval_loss: float | None
    # Greedy outputs on the held-out prompts after the last step (decoded for the last report).
    final_outputs: list[str] | None


class _PeftTrainer(peft_trainer.PeftTrainer):
    """PeftTrainer that keeps the auxiliary counts of its eval steps for the report hook."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_counts: dict[str, float] = {}

    def _post_process_eval_step(self, aux) -> None:
        for key, value in aux.items():
            self.eval_counts[key] = self.eval_counts.get(key, 0.0) + float(value)

    def take_eval_counts(self) -> dict[str, float]:
        counts, self.eval_counts = self.eval_counts, {}
        return counts


class _ReportHook(hooks_lib.TrainingHooks):
    """Turns Tunix's periodic evaluation into `ctx.report(step, {...})` calls (ASHA sees them)."""

    def __init__(self, ctx: RunContext, started: float, decoder: Decoder, items: list[dict]):
        self.ctx = ctx
        self.started = started
        self.decoder = decoder
        self.items = items
        self.last_texts: list[str] | None = None
        self.train_losses_seen = 0
        self.last_eval_loss: float | None = None
        self.last_step_reported = -1

    def on_train_start(self, train_ctx):
        pass

    def on_train_end(self, train_ctx):
        pass

    def on_train_step_start(self, train_ctx):
        pass

    def on_train_step_end(self, train_ctx, train_step, train_loss):
        pass

    def on_eval_step_start(self, train_ctx):
        pass

    def on_eval_step_end(self, train_ctx, eval_loss):
        self.record(train_ctx)

    def record(self, train_ctx) -> None:
        logger = train_ctx.metrics_logger
        step = train_ctx.train_steps
        eval_loss = float(logger.get_metric_history(train_ctx.metrics_prefix, "loss", "eval")[-1])
        counts = train_ctx.take_eval_counts()
        self.last_eval_loss = eval_loss
        if step == 0 or step == self.last_step_reported:
            self.ctx.log(f"step {step}: eval_loss={eval_loss:.4f}")
            return
        train_loss = float("nan")
        if logger.metric_exists(train_ctx.metrics_prefix, "loss", "train"):
            history = logger.get_metric_history(train_ctx.metrics_prefix, "loss", "train")
            recent = history[self.train_losses_seen :]
            self.train_losses_seen = len(history)
            if len(recent):
                train_loss = float(np.mean(recent))
        if not np.isfinite(eval_loss):
            raise FloatingPointError(f"training diverged at step {step} (eval loss {eval_loss})")
        # Held-out exact match at every report: a job may optimise it, and its best run is the best
        # report. Early stopping ranks accuracy jobs by answer_token_accuracy (trainer.py).
        decode_started = time.monotonic()
        self.last_texts = self.decoder.decode()
        decode_s = time.monotonic() - decode_started
        metrics = {
            "train_loss": train_loss,
            "eval_loss": eval_loss,
            "perplexity": float(np.exp(min(eval_loss, 50.0))),
            "accuracy": exact_match(self.items, self.last_texts),
            # Teacher-forced, from the eval forward pass (no decoding): informative from the first
            # report, when exact match is still 0 for every trial (the early-stopping signal).
            "answer_token_accuracy": counts["hits"] / max(counts["tokens"], 1.0),
            "teacher_forced_exact_match": counts["items_right"] / max(counts["items"], 1.0),
        }
        if not np.isfinite(train_loss):
            del metrics["train_loss"]
        self.ctx.log(
            f"step {step}: "
            + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            + f" ({time.monotonic() - self.started:.1f}s; decoding {len(self.items)} prompts {decode_s:.1f}s)"
        )
        self.last_step_reported = step
        self.ctx.report(step, metrics)


def _optimizer(hp: dict):
    # inject_hyperparams keeps a constant rate out of the compiled program: trials with different
    # rates share one compiled step (and the persistent cache). A warm-up schedule does not.
    if hp["warmup_steps"]:
        rate = optax.join_schedules(
            [
                optax.linear_schedule(0.0, hp["learning_rate"], hp["warmup_steps"]),
                optax.constant_schedule(hp["learning_rate"]),
            ],
            [hp["warmup_steps"]],
        )
        adamw = optax.adamw(rate, weight_decay=hp["weight_decay"])
    else:
        adamw = optax.inject_hyperparams(optax.adamw)(
            learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"]
        )
    if hp["max_grad_norm"]:
        return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]), adamw)
    return adamw


def train(ctx: RunContext) -> TrainedModel:
    _configure_jax()
    absl_logging.set_verbosity(absl_logging.WARNING)  # Tunix logs every step; ctx.log says what matters
    started = time.monotonic()
    hp = ctx.hyperparameters
    dataset = trace_dataset_resolve(reference=ctx.dataset)
    tokenizer = HFTokenizer(str(pretrained_folder(hp["pretrained_path"]))) if hf_checkpoint(hp) else ByteTokenizer()
    train_items, eval_items = dataset.train_items, dataset.eval_items[: hp["eval_items"]]

    longest = max(example_length(tokenizer, item) for item in train_items + eval_items)
    seq_len = min(hp["max_seq_len"], round_up(longest))
    train_tokens, train_masks, cut = encode_split(tokenizer, train_items, seq_len)
    eval_tokens, eval_masks, _ = encode_split(tokenizer, eval_items, seq_len)
    ctx.log(
        f"dataset {dataset.reference}: {len(train_items)} train, {len(eval_items)} held-out traces; "
        f"sequence length {seq_len} tokens" + (f"; {cut} training traces cut to fit" if cut else "")
    )

    model, config = build_model(hp, getattr(tokenizer, "vocab_size", ByteTokenizer.vocab_size))
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    ctx.log(
        f"model: Qwen3 {config.num_layers} layers, width {config.embed_dim}, {params:,} parameters"
        + (f", LoRA rank {hp['lora_rank']}" if hp["lora_rank"] else ", full fine-tune")
        + f"; JAX on {', '.join(str(d) for d in jax.devices())}"
    )
    if os.environ.get("CUDA_VISIBLE_DEVICES") and jax.default_backend() == "cpu":
        # Ray gave this trial a GPU (gpus_per_trial > 0) but this JAX build has no CUDA backend.
        ctx.log(
            f"a GPU was assigned (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}) but JAX runs on the "
            'CPU: install the CUDA build in the worker environment (pip install "jax[cuda12]==0.10.2")',
            stream="stderr",
        )

    training_config = peft_trainer.TrainingConfig(
        eval_every_n_steps=hp["eval_interval"],
        max_steps=hp["max_steps"],
        metrics_logging_options=None,  # a log_dir leaks listeners across trainings in one process
        pbar_description=None,
    )
    trainer = _PeftTrainer(model, _optimizer(hp), training_config)
    trainer = trainer.with_loss_fn(loss_and_answer_hits, has_aux=True)
    trainer = trainer.with_gen_model_input_fn(model_inputs(tokenizer.pad_id()))
    decoder = held_out_decoder(model, config, tokenizer, eval_items, hp["max_new_tokens"])
    hook = _ReportHook(ctx, started, decoder, eval_items)
    trainer.with_training_hooks(hook)
    held_out_batches = eval_batches(eval_tokens, eval_masks)
    try:
        trainer.train(train_batches(train_tokens, train_masks, hp["batch_size"], hp["seed"]), held_out_batches)
    except RunStoppedEarly:
        # Ray Tune stopped the trial at a report: the model of that step, and its held-out outputs
        # just decoded for the report, are what gets saved and evaluated.
        ctx.log(f"stopped early at step {hook.last_step_reported}; keeping the model of that step")
    else:
        if hook.last_step_reported != trainer.train_steps:
            # max_steps is not a multiple of eval_interval: evaluate the final model once more.
            _, eval_step = trainer.jit_train_and_eval_step()
            trainer._run_eval(held_out_batches, eval_step)  # noqa: SLF001 (Tunix's own eval loop)
    ctx.log(f"trained {trainer.train_steps} steps in {time.monotonic() - started:.1f}s")

    save(ctx, model, config, hp)
    source = pretrained_folder(hp["pretrained_path"]) if hf_checkpoint(hp) else None
    hf_format.export(
        ctx.output_dir, model, config, tokenizer, source=source, lora_alpha=hp["lora_alpha"], lora_rank=hp["lora_rank"]
    )
    return TrainedModel(
        model=model,
        tokenizer=tokenizer,
        config=config,
        eval_items=eval_items,
        final_eval_loss=hook.last_eval_loss,
        final_outputs=hook.last_texts,
    )


def evaluate(ctx: RunContext, state: TrainedModel) -> EvaluationResult:
    """Exact match of the final answers greedy-decoded (Tunix Sampler) from the held-out prompts."""
    started = time.monotonic()
    items = state.eval_items
    texts = state.final_outputs
    if texts is None:
        raise RuntimeError("the model was never decoded on the held-out split (no report was made)")
    details = []
    correct = answered = 0
    for item, text in zip(items, texts, strict=True):
        predicted = extract_answer(text)
        expected = item["final_answer"].strip()
        hit = predicted == expected
        correct += hit
        answered += bool(predicted)
        if len(details) < MAX_DETAILS:
            details.append(
                {
                    "prompt": item["prompt"][:MAX_DETAIL_CHARS],
                    "expected": expected[:MAX_DETAIL_CHARS],
                    "predicted": predicted[:MAX_DETAIL_CHARS],
                    "output": text[:MAX_DETAIL_CHARS],
                    "correct": hit,
                }
            )
    majority = Counter(item["final_answer"].strip() for item in items).most_common(1)[0][1] / len(items)
    metrics = {
        "accuracy": correct / len(items),
        "answered": answered / len(items),
        "majority_baseline": majority,
        "eval_items": float(len(items)),
    }
    if state.final_eval_loss is not None:
        metrics["eval_loss"] = state.final_eval_loss
    ctx.log(f"evaluation: {correct}/{len(items)} exact matches in {time.monotonic() - started:.1f}s")
    (ctx.output_dir / "evaluation.json").write_text(json.dumps({"metrics": metrics, "predictions": details}, indent=2))
    return EvaluationResult(metrics=metrics, primary_metric="accuracy", details=details)
