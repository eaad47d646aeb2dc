"""Generate the built-in digit-by-digit addition dataset (deterministic; run once, output committed).

    python traces/data/generate_addition.py > traces/data/addition.jsonl

Every pair of two-digit numbers a+b (10..99) is a candidate; a fixed-seed shuffle picks the
training and held-out items. Each trace adds the digits right to left with the carry spelled out,
so held-out pairs are solvable from what training teaches (every single-digit step also occurs in
training); only the pairs themselves are new. A memorised table of whole sums would not generalise.
"""

from __future__ import annotations

import json
import random
import sys

SEED = 20261127
TRAIN_ITEMS = 3000
EVAL_ITEMS = 200


def trace(a: int, b: int) -> dict:
    steps = []
    carry = 0
    da, db = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total}" if carry else f"{x}+{y}={total}")
        carry = total // 10
    return {"prompt": f"What is {a}+{b}?", "steps": steps, "final_answer": str(a + b), "meta": {"a": a, "b": b}}


def main() -> None:
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(SEED).shuffle(pairs)
    # Held-out items come last: `traces.services` keeps file order and `split: eval` marks them.
    for split, chosen in (("train", pairs[:TRAIN_ITEMS]), ("eval", pairs[TRAIN_ITEMS : TRAIN_ITEMS + EVAL_ITEMS])):
        for a, b in chosen:
            item = trace(a, b)
            item["meta"]["split"] = split
            sys.stdout.write(json.dumps(item, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
