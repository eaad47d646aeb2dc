"""Held-out scoring of the Tunix trainer: greedy decoding with Tunix's Sampler, exact match of the
final answers, and the teacher-forced counts of the eval forward pass. Imports JAX and Tunix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.generate import sampler as sampler_lib

from traces.parsing import extract_answer, render_completion

from .data import EVAL_BATCH, PROMPT_SUFFIX, round_up


class Decoder:
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


def loss_and_answer_hits(model, input_tokens, input_mask, positions, attention_mask):
    """Tunix's default SFT loss (mean NLL on the completion tokens), plus what the teacher-forced
    forward pass already knows: how many completion tokens the model predicts exactly (argmax),
    and how many items have every completion token right (greedy decoding would then reproduce the
    whole trace). Summed over the batch, so the hook can pool the eval batches."""
    logits, _ = model(input_tokens, positions, None, attention_mask)
    logits, targets = logits[:, :-1, :], input_tokens[:, 1:]
    mask = input_mask[:, 1:].astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    loss = jnp.sum(nll * mask) / (jnp.sum(mask) + 1e-8)
    hits = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32) * mask
    per_item_tokens = jnp.sum(mask, axis=1)
    scored = per_item_tokens > 0  # eval batches are padded with rows that carry no tokens
    aux = {
        "hits": jnp.sum(hits),
        "tokens": jnp.sum(mask),
        "items_right": jnp.sum(scored & (jnp.sum(hits, axis=1) == per_item_tokens)),
        "items": jnp.sum(scored),
    }
    return loss, aux


def exact_match(items: list[dict], texts: list[str]) -> float:
    hits = sum(extract_answer(text) == item["final_answer"].strip() for item, text in zip(items, texts, strict=True))
    return hits / len(items)


def held_out_decoder(model, config, tokenizer, items: list[dict], max_new_tokens: int) -> Decoder:
    """The decoder of the held-out prompts, sized from them: prompts padded to a multiple of 8
    tokens, at most the longest completion + 4 tokens generated (capped by `max_new_tokens`)."""
    prompt_lens = [len(tokenizer.encode(item["prompt"] + PROMPT_SUFFIX)) + 1 for item in items]
    completion_lens = [len(tokenizer.encode(render_completion(item))) + 1 for item in items]
    new_tokens = min(max_new_tokens, round_up(max(completion_lens) + 4, 8))
    return Decoder(model, config, tokenizer, items, round_up(max(prompt_lens), 8), new_tokens)
