"""Training and evaluation code of the `tunix-sft` trainer. Imports JAX and Tunix: only the
worker process that executes a run imports this module (through `TunixSFTTrainer.train`)."""

from __future__ import annotations

import json
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
from tunix.generate import sampler as sampler_lib
from tunix.sft import hooks as hooks_lib
from tunix.sft import peft_trainer

from runs.trainers.base import EvaluationResult, RunContext
from traces.parsing import extract_answer, render_completion
from traces.services import trace_dataset_resolve

from .checkpoint import build_model, hf_checkpoint, save
from .data import (
    EVAL_BATCH,
    PROMPT_SUFFIX,
    ByteTokenizer,
    HFTokenizer,
    encode_split,
    eval_batches,
    example_length,
    model_inputs,
    round_up,
    train_batches,
)
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


class _Decoder:
    """Greedy decoding of the held-out prompts with Tunix's Sampler: one sampler (one compiled
    prefill/decode) whose weights are refreshed from the model being trained at each report."""

    def __init__(self, model, config, tokenizer, items: list[dict], max_prompt_len: int, max_new_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.prompts = [item["prompt"] + PROMPT_SUFFIX for item in items]
        self.max_prompt_len = max_prompt_len
        self.max_new_tokens = max_new_tokens
        self.batch = min(EVAL_BATCH, len(self.prompts))
        cache = sampler_lib.CacheConfig(
            cache_size=max_prompt_len + max_new_tokens,
            num_layers=config.num_layers,
            num_kv_heads=config.num_kv_heads,
            head_dim=config.head_dim,
        )
        self.sampler: sampler_lib.Sampler | None = None
        self.cache = cache

    def decode(self) -> list[str]:
        if self.sampler is None:
            self.sampler = sampler_lib.Sampler(
                transformer=self.model, tokenizer=self.tokenizer, cache_config=self.cache
            )
        else:
            self.sampler.transformer_state = nnx.variables(self.model)
        texts: list[str] = []
        for start in range(0, len(self.prompts), self.batch):
            chunk = self.prompts[start : start + self.batch]
            padded = chunk + [chunk[-1]] * (self.batch - len(chunk))  # one batch shape, one compile
            out = self.sampler(
                padded,
                max_generation_steps=self.max_new_tokens,
                max_prompt_length=self.max_prompt_len,
                eos_tokens=[self.tokenizer.eos_id()],
                temperature=0.0,
            )
            texts.extend(out.text[: len(chunk)])
        return texts


def _accuracy(items: list[dict], texts: list[str]) -> float:
    hits = sum(extract_answer(text) == item["final_answer"].strip() for item, text in zip(items, texts, strict=True))
    return hits / len(items)


class _ReportHook(hooks_lib.TrainingHooks):
    """Turns Tunix's periodic evaluation into `ctx.report(step, {...})` calls (ASHA sees them)."""

    def __init__(self, ctx: RunContext, started: float, decoder: _Decoder, items: list[dict]):
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
        # Held-out exact match at every report, so a tuning job can rank (and ASHA stop) on accuracy.
        self.last_texts = self.decoder.decode()
        metrics = {
            "train_loss": train_loss,
            "eval_loss": eval_loss,
            "perplexity": float(np.exp(min(eval_loss, 50.0))),
            "accuracy": _accuracy(self.items, self.last_texts),
        }
        if not np.isfinite(train_loss):
            del metrics["train_loss"]
        self.ctx.log(
            f"step {step}: "
            + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            + f" ({time.monotonic() - self.started:.1f}s)"
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
        return optax.adamw(rate, weight_decay=hp["weight_decay"])
    return optax.inject_hyperparams(optax.adamw)(learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"])


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
    prompt_lens = [len(tokenizer.encode(item["prompt"] + PROMPT_SUFFIX)) + 1 for item in eval_items]
    completion_lens = [len(tokenizer.encode(render_completion(item))) + 1 for item in eval_items]
    ctx.log(
        f"dataset {dataset.reference}: {len(train_items)} train, {len(eval_items)} held-out traces; "
        f"sequence length {seq_len} tokens" + (f"; {cut} training traces cut to fit" if cut else "")
    )

    model, config = build_model(hp, getattr(tokenizer, "vocab_size", ByteTokenizer.vocab_size))
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    ctx.log(
        f"model: Qwen3 {config.num_layers} layers, width {config.embed_dim}, {params:,} parameters"
        + (f", LoRA rank {hp['lora_rank']}" if hp["lora_rank"] else ", full fine-tune")
    )

    training_config = peft_trainer.TrainingConfig(
        eval_every_n_steps=hp["eval_interval"],
        max_steps=hp["max_steps"],
        metrics_logging_options=None,  # a log_dir leaks listeners across trainings in one process
        pbar_description=None,
    )
    trainer = peft_trainer.PeftTrainer(model, _optimizer(hp), training_config)
    trainer = trainer.with_gen_model_input_fn(model_inputs(tokenizer.pad_id()))
    max_prompt_len = round_up(max(prompt_lens), 8)
    max_new_tokens = min(hp["max_new_tokens"], round_up(max(completion_lens) + 4, 8))
    decoder = _Decoder(model, config, tokenizer, eval_items, max_prompt_len, max_new_tokens)
    hook = _ReportHook(ctx, started, decoder, eval_items)
    trainer.with_training_hooks(hook)
    held_out_batches = eval_batches(eval_tokens, eval_masks)
    trainer.train(train_batches(train_tokens, train_masks, hp["batch_size"], hp["seed"]), held_out_batches)
    if hook.last_step_reported != trainer.train_steps:
        # max_steps is not a multiple of eval_interval: evaluate the final model once more.
        _, eval_step = trainer.jit_train_and_eval_step()
        trainer._run_eval(held_out_batches, eval_step)  # noqa: SLF001 (Tunix's own eval loop)
    ctx.log(f"trained {trainer.train_steps} steps in {time.monotonic() - started:.1f}s")

    save(ctx, model, config, hp)
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
