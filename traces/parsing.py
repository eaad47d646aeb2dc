"""Parse and split reasoning-trace JSON lines. Pure Python: no Django models, no ML libraries.

One trace per line: {"prompt": str, "steps": [str, ...], "final_answer": str, "meta": {...}?}.
Bounds (docs/tunix.md): MAX_BYTES per dataset, MAX_LINES traces, MAX_LINE_CHARS per line.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass

MAX_BYTES = 4 * 1024 * 1024
MAX_LINES = 20_000
MAX_LINE_CHARS = 4_000
MAX_ERRORS_REPORTED = 20
SPLIT_SEED = 0
SPLITS = ("train", "eval")


class TraceFormatError(ValueError):
    """The file is not a valid trace dataset; `errors` lists "line N: why" messages."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class ParsedDataset:
    train: list[dict]
    eval: list[dict]
    content_hash: str


def _check_item(item: object) -> str | None:
    if not isinstance(item, dict):
        return "must be a JSON object"
    missing = [key for key in ("prompt", "steps", "final_answer") if key not in item]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    unknown = sorted(set(item) - {"prompt", "steps", "final_answer", "meta"})
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    if not isinstance(item["prompt"], str) or not item["prompt"].strip():
        return "prompt must be a non-empty string"
    steps = item["steps"]
    if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
        return "steps must be a list of strings"
    if not isinstance(item["final_answer"], str) or not item["final_answer"].strip():
        return "final_answer must be a non-empty string"
    meta = item.get("meta", {})
    if not isinstance(meta, dict):
        return "meta must be a JSON object"
    if "split" in meta and meta["split"] not in SPLITS:
        return f"meta.split must be one of {list(SPLITS)}"
    return None


def parse_traces(content: bytes | str, *, eval_fraction: float = 0.1) -> ParsedDataset:
    """Validate every line and split train/eval, or raise TraceFormatError naming the bad lines.

    Items tagged `meta.split` keep their split (untagged ones train); otherwise a fixed-seed shuffle
    holds out round(eval_fraction * n) items (at least one)."""
    if not 0 < eval_fraction < 1:
        raise TraceFormatError([f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction}"])
    raw = content.encode() if isinstance(content, str) else content
    if len(raw) > MAX_BYTES:
        raise TraceFormatError([f"file is {len(raw)} bytes; at most {MAX_BYTES} bytes are allowed"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TraceFormatError([f"line {line}: not valid UTF-8"]) from None
    items: list[dict] = []
    errors: list[str] = []
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise TraceFormatError([f"file has {len(lines)} lines; at most {MAX_LINES} are allowed"])
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            errors.append(f"line {number}: {len(line)} characters; at most {MAX_LINE_CHARS} are allowed")
        else:
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})")
            else:
                problem = _check_item(item)
                if problem:
                    errors.append(f"line {number}: {problem}")
                else:
                    items.append(item)
        if len(errors) >= MAX_ERRORS_REPORTED:
            errors.append("further lines not checked")
            break
    if errors:
        raise TraceFormatError(errors)
    if len(items) < 2:
        raise TraceFormatError(["the file needs at least 2 traces (one to train on, one held out)"])
    if any("split" in item.get("meta", {}) for item in items):
        train = [item for item in items if item.get("meta", {}).get("split", "train") == "train"]
        held_out = [item for item in items if item.get("meta", {}).get("split") == "eval"]
    else:
        order = list(range(len(items)))
        random.Random(SPLIT_SEED).shuffle(order)
        n_eval = min(len(items) - 1, max(1, math.floor(eval_fraction * len(items) + 0.5)))
        chosen = set(order[:n_eval])
        train = [item for i, item in enumerate(items) if i not in chosen]
        held_out = [item for i, item in enumerate(items) if i in chosen]
    if not train or not held_out:
        raise TraceFormatError(["the split needs at least one train and one eval trace (see meta.split)"])
    digest = hashlib.sha256()
    for split, chunk in (("train", train), ("eval", held_out)):
        for item in chunk:
            digest.update(split.encode() + b"\t" + json.dumps(item, sort_keys=True).encode() + b"\n")
    return ParsedDataset(train=train, eval=held_out, content_hash=digest.hexdigest())


def render_completion(item: dict) -> str:
    """The target text a model learns for a trace: its steps, then the answer after '####'."""
    return "; ".join(item["steps"]) + (" " if item["steps"] else "") + "#### " + item["final_answer"]


def extract_answer(text: str) -> str:
    """The final answer in generated text: what follows the last '####', stripped."""
    if "####" not in text:
        return ""
    return text.rsplit("####", 1)[1].strip()
