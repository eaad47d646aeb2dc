"""Training and evaluation code of the `tunix-sft` trainer. Imports JAX and Tunix: only the
worker process that executes a run imports this module (through `TunixSFTTrainer.train`)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from absl import logging as absl_logging
from django.conf import settings
from flax import nnx
from tunix.generate import sampler as sampler_lib
from tunix.models.qwen3 import model as qwen3_lib
from tunix.sft import hooks as hooks_lib
from tunix.sft import peft_trainer
from tunix.sft import utils as sft_utils

from runs.trainers.base import EvaluationResult, RunContext
from traces.parsing import extract_answer, render_completion
from traces.services import trace_dataset_resolve
from traces.trainer import pretrained_folder

EVAL_BATCH = 50
MAX_DETAILS = 200
MAX_DETAIL_CHARS = 500
PROMPT_SUFFIX = "\n"
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


class ByteTokenizer:
    """UTF-8 bytes shifted past three special ids: PAD=0, BOS=1, EOS=2 (vocabulary 259).
    Needs no download; BOS is non-zero because Tunix's Sampler skips a zero BOS id."""

    PAD, BOS, EOS, OFFSET = 0, 1, 2, 3
    vocab_size = 256 + OFFSET

    def encode(self, text: str, **kwargs) -> list[int]:
        return [b + self.OFFSET for b in text.encode("utf-8")]

    def decode(self, ids, **kwargs) -> str:
        return bytes(int(i) - self.OFFSET for i in ids if int(i) >= self.OFFSET).decode("utf-8", errors="replace")

    def bos_id(self) -> int:
        return self.BOS

    def eos_id(self) -> int:
        return self.EOS

    def pad_id(self) -> int:
        return self.PAD


class _HFTokenizer:
    """A local Hugging Face tokenizer.json behind the interface Tunix's Sampler expects."""

    def __init__(self, folder: str):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(f"{folder}/tokenizer.json")
        config_file = Path(folder) / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        self._eos = self._tok.token_to_id(config.get("eos_token") or "<|im_end|>") or self._tok.token_to_id(
            "<|endoftext|>"
        )
        self._pad = self._tok.token_to_id(config.get("pad_token") or "<|endoftext|>") or self._eos
        self._bos = self._tok.token_to_id(config.get("bos_token") or "") or None
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str, **kwargs) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, **kwargs) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def bos_id(self):
        return self._bos

    def eos_id(self) -> int:
        return self._eos

    def pad_id(self) -> int:
        return self._pad


@dataclass
class TrainedModel:
    model: Any
    tokenizer: Any
    config: Any
    eval_items: list[dict]
    final_eval_loss: float | None
    # Greedy outputs on the held-out prompts after the last step (decoded for the last report).
    final_outputs: list[str] | None


def _encode_example(tokenizer, item: dict, seq_len: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Tokens [BOS] prompt completion [EOS], right-padded; loss mask on completion + EOS only."""
    bos = [tokenizer.bos_id()] if tokenizer.bos_id() is not None else []
    prompt = bos + tokenizer.encode(item["prompt"] + PROMPT_SUFFIX)
    completion = tokenizer.encode(render_completion(item)) + [tokenizer.eos_id()]
    tokens = (prompt + completion)[:seq_len]
    mask = ([0] * len(prompt) + [1] * len(completion))[:seq_len]
    cut = len(prompt) + len(completion) > seq_len
    pad = seq_len - len(tokens)
    return (
        np.asarray(tokens + [tokenizer.pad_id()] * pad, dtype=np.int32),
        np.asarray(mask + [0] * pad, dtype=np.int32),
        cut,
    )


def _example_length(tokenizer, item: dict) -> int:
    prompt = tokenizer.encode(item["prompt"] + PROMPT_SUFFIX)
    return 2 + len(prompt) + len(tokenizer.encode(render_completion(item)))


def _round_up(n: int, multiple: int = 16) -> int:
    return -(-n // multiple) * multiple


def _encode_split(tokenizer, items: list[dict], seq_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    encoded = [_encode_example(tokenizer, item, seq_len) for item in items]
    tokens = np.stack([t for t, _, _ in encoded])
    masks = np.stack([m for _, m, _ in encoded])
    return tokens, masks, sum(cut for _, _, cut in encoded)


def _train_batches(tokens: np.ndarray, masks: np.ndarray, batch_size: int, seed: int) -> Iterator:
    rng = np.random.default_rng(seed)
    n = len(tokens)
    while True:
        order = rng.permutation(n)
        # Batches of a fixed shape (one compiled step): a short dataset repeats within a batch.
        if n < batch_size:
            order = np.resize(order, batch_size)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield peft_trainer.TrainingInput(input_tokens=tokens[idx], input_mask=masks[idx])


def _eval_batches(tokens: np.ndarray, masks: np.ndarray) -> list:
    batches = []
    for start in range(0, len(tokens), EVAL_BATCH):
        t, m = tokens[start : start + EVAL_BATCH], masks[start : start + EVAL_BATCH]
        if len(t) < EVAL_BATCH:  # pad rows carry no loss (mask 0); keeps one compiled eval step
            extra = EVAL_BATCH - len(t)
            t = np.concatenate([t, np.zeros((extra, t.shape[1]), t.dtype)])
            m = np.concatenate([m, np.zeros((extra, m.shape[1]), m.dtype)])
        batches.append(peft_trainer.TrainingInput(input_tokens=t, input_mask=m))
    return batches


def _model_inputs(pad_id: int):
    def gen_model_input_fn(x: peft_trainer.TrainingInput) -> dict:
        present = x.input_tokens != pad_id
        return {
            "input_tokens": x.input_tokens,
            "input_mask": x.input_mask,
            "positions": sft_utils.build_positions_from_mask(present),
            "attention_mask": sft_utils.make_causal_attn_mask(present),
        }

    return gen_model_input_fn


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


def _hf_checkpoint(hp: dict) -> bool:
    return bool(hp["pretrained_path"]) and hp["pretrained_config"] != "tunix-rt"


def _load_tunix_rt_checkpoint(folder: Path):
    """A model saved by a Tunix RT run (`_save`): rebuild it from its config, then load its weights."""
    if not (folder / "model.npz").is_file() or not (folder / "model_config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no Tunix RT checkpoint (model.npz and model_config.json)")
    saved = json.loads((folder / "model_config.json").read_text())
    fields = {f.name for f in dataclasses.fields(qwen3_lib.ModelConfig)}
    config = qwen3_lib.ModelConfig(**{k: v for k, v in saved["config"].items() if k in fields})
    model = qwen3_lib.Qwen3(config, rngs=nnx.Rngs(params=0))
    arrays = np.load(folder / "model.npz")
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for path, variable in flat:
        variable.value = jax.numpy.asarray(arrays[".".join(str(k) for k in path)])
    nnx.update(model, nnx.from_flat_state(flat))
    return model, config


def _build_model(hp: dict, vocab_size: int):
    if hp["pretrained_path"]:
        folder = pretrained_folder(hp["pretrained_path"])
        if hp["pretrained_config"] == "tunix-rt":
            model, config = _load_tunix_rt_checkpoint(folder)
        else:
            from tunix.models.qwen3 import params as qwen3_params

            config = getattr(qwen3_lib.ModelConfig, hp["pretrained_config"])()
            model = qwen3_params.create_model_from_safe_tensors(str(folder), config)
        if hp["lora_rank"]:
            import qwix

            provider = qwix.LoraProvider(
                module_path=".*q_proj|.*k_proj|.*v_proj|.*o_proj|.*gate_proj|.*down_proj|.*up_proj",
                rank=hp["lora_rank"],
                alpha=hp["lora_alpha"],
            )
            model = qwix.apply_lora_to_model(
                model, provider, rngs=nnx.Rngs(params=hp["seed"]), **model.get_model_input()
            )
        return model, config
    config = qwen3_lib.ModelConfig(
        num_layers=hp["num_layers"],
        vocab_size=vocab_size,
        embed_dim=hp["embed_dim"],
        hidden_dim=hp["hidden_dim"],
        num_heads=hp["num_heads"],
        head_dim=hp["head_dim"],
        num_kv_heads=hp["num_kv_heads"],
        rope_theta=10_000,
        norm_eps=1e-6,
        use_tied_embedding=False,
    )
    # Not tunix's dummy_model_creator: it sets norm weights near zero and the model does not learn.
    return qwen3_lib.Qwen3(config, rngs=nnx.Rngs(params=hp["seed"])), config


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
    tokenizer = _HFTokenizer(str(pretrained_folder(hp["pretrained_path"]))) if _hf_checkpoint(hp) else ByteTokenizer()
    train_items, eval_items = dataset.train_items, dataset.eval_items[: hp["eval_items"]]

    longest = max(_example_length(tokenizer, item) for item in train_items + eval_items)
    seq_len = min(hp["max_seq_len"], _round_up(longest))
    train_tokens, train_masks, cut = _encode_split(tokenizer, train_items, seq_len)
    eval_tokens, eval_masks, _ = _encode_split(tokenizer, eval_items, seq_len)
    prompt_lens = [len(tokenizer.encode(item["prompt"] + PROMPT_SUFFIX)) + 1 for item in eval_items]
    completion_lens = [len(tokenizer.encode(render_completion(item))) + 1 for item in eval_items]
    ctx.log(
        f"dataset {dataset.reference}: {len(train_items)} train, {len(eval_items)} held-out traces; "
        f"sequence length {seq_len} tokens" + (f"; {cut} training traces cut to fit" if cut else "")
    )

    model, config = _build_model(hp, getattr(tokenizer, "vocab_size", ByteTokenizer.vocab_size))
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
    trainer = trainer.with_gen_model_input_fn(_model_inputs(tokenizer.pad_id()))
    max_prompt_len = _round_up(max(prompt_lens), 8)
    max_new_tokens = min(hp["max_new_tokens"], _round_up(max(completion_lens) + 4, 8))
    decoder = _Decoder(model, config, tokenizer, eval_items, max_prompt_len, max_new_tokens)
    hook = _ReportHook(ctx, started, decoder, eval_items)
    trainer.with_training_hooks(hook)
    eval_batches = _eval_batches(eval_tokens, eval_masks)
    trainer.train(_train_batches(train_tokens, train_masks, hp["batch_size"], hp["seed"]), eval_batches)
    if hook.last_step_reported != trainer.train_steps:
        # max_steps is not a multiple of eval_interval: evaluate the final model once more.
        _, eval_step = trainer.jit_train_and_eval_step()
        trainer._run_eval(eval_batches, eval_step)  # noqa: SLF001 (Tunix's own eval loop)
    ctx.log(f"trained {trainer.train_steps} steps in {time.monotonic() - started:.1f}s")

    _save(ctx, model, config, hp)
    return TrainedModel(
        model=model,
        tokenizer=tokenizer,
        config=config,
        eval_items=eval_items,
        final_eval_loss=hook.last_eval_loss,
        final_outputs=hook.last_texts,
    )


def _save(ctx: RunContext, model, config, hp: dict) -> None:
    """The final weights as a flat .npz of named arrays, with the config to rebuild the model."""
    state = nnx.state(model, nnx.Param)
    flat = {".".join(str(k) for k in path): np.asarray(value) for path, value in nnx.to_flat_state(state)}
    np.savez(ctx.output_dir / "model.npz", **flat)
    description = {
        "architecture": "tunix.models.qwen3.Qwen3",
        "config": {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if isinstance(getattr(config, f.name), (int, float, str, bool, type(None)))
        },
        "tokenizer": "pretrained" if _hf_checkpoint(hp) else "byte-level (PAD=0, BOS=1, EOS=2, byte+3)",
        "hyperparameters": hp,
    }
    (ctx.output_dir / "model_config.json").write_text(json.dumps(description, indent=2, default=str))


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
