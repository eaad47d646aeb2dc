"""Text to tensors for the Tunix trainers: tokenizers (byte-level, or a local Hugging Face
tokenizer.json) and fixed-shape training and evaluation batches. Imports NumPy and Tunix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tunix.sft import peft_trainer
from tunix.sft import utils as sft_utils

from traces.parsing import render_completion

EVAL_BATCH = 50
PROMPT_SUFFIX = "\n"


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


class HFTokenizer:
    """A local Hugging Face tokenizer.json behind the interface Tunix's Sampler expects."""

    def __init__(self, folder: str):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(f"{folder}/tokenizer.json")
        config_file = Path(folder) / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}

        def token_id(key: str, *fallbacks: str) -> int | None:
            # Ids may be 0 (a falsy id is still an id); names may be saved as {"content": ...}.
            for name in (config.get(key), *fallbacks):
                name = name.get("content") if isinstance(name, dict) else name
                found = self._tok.token_to_id(name) if name else None
                if found is not None:
                    return found
            return None

        self._eos = token_id("eos_token", "<|im_end|>", "<|endoftext|>")
        if self._eos is None:
            raise ValueError(f"{folder}: no EOS token (set eos_token in tokenizer_config.json)")
        pad = token_id("pad_token", "<|endoftext|>")
        self._pad = self._eos if pad is None else pad
        self._bos = token_id("bos_token")
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str, **kwargs) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def special_tokens(self) -> dict[str, str | None]:
        """The names of BOS, EOS and PAD, as tokenizer_config.json spells them."""
        name = self._tok.id_to_token
        return {
            "bos_token": name(self._bos) if self._bos is not None else None,
            "eos_token": name(self._eos),
            "pad_token": name(self._pad),
        }

    def decode(self, ids, **kwargs) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def bos_id(self):
        return self._bos

    def eos_id(self) -> int:
        return self._eos

    def pad_id(self) -> int:
        return self._pad


def encode_example(tokenizer, item: dict, seq_len: int) -> tuple[np.ndarray, np.ndarray, bool]:
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


def example_length(tokenizer, item: dict) -> int:
    prompt = tokenizer.encode(item["prompt"] + PROMPT_SUFFIX)
    return 2 + len(prompt) + len(tokenizer.encode(render_completion(item)))


def round_up(n: int, multiple: int = 16) -> int:
    return -(-n // multiple) * multiple


def encode_split(tokenizer, items: list[dict], seq_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    encoded = [encode_example(tokenizer, item, seq_len) for item in items]
    tokens = np.stack([t for t, _, _ in encoded])
    masks = np.stack([m for _, m, _ in encoded])
    return tokens, masks, sum(cut for _, _, cut in encoded)


def train_batches(tokens: np.ndarray, masks: np.ndarray, batch_size: int, seed: int) -> Iterator:
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


def eval_batches(tokens: np.ndarray, masks: np.ndarray) -> list:
    batches = []
    for start in range(0, len(tokens), EVAL_BATCH):
        t, m = tokens[start : start + EVAL_BATCH], masks[start : start + EVAL_BATCH]
        if len(t) < EVAL_BATCH:  # pad rows carry no loss (mask 0); keeps one compiled eval step
            extra = EVAL_BATCH - len(t)
            t = np.concatenate([t, np.zeros((extra, t.shape[1]), t.dtype)])
            m = np.concatenate([m, np.zeros((extra, m.shape[1]), m.dtype)])
        batches.append(peft_trainer.TrainingInput(input_tokens=t, input_mask=m))
    return batches


def model_inputs(pad_id: int):
    def gen_model_input_fn(x: peft_trainer.TrainingInput) -> dict:
        present = x.input_tokens != pad_id
        return {
            "input_tokens": x.input_tokens,
            "input_mask": x.input_mask,
            "positions": sft_utils.build_positions_from_mask(present),
            "attention_mask": sft_utils.make_causal_attn_mask(present),
        }

    return gen_model_input_fn
