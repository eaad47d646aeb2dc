"""Time one default `tunix-sft` trial (train + evaluate) cold and warm, in fresh processes.

    .venv/bin/python bench/tunix_trial.py [--runs 2] [--set max_steps=300 --set learning_rate=0.003]

The first run starts from an empty JAX compile cache (cold), later runs reuse it (warm). Each run
is a separate process, like a trial in a worker: it prints wall time, train/evaluate split, peak
RSS and the held-out accuracy. Uses its own SQLite database and data folder under var/bench.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROCESS_START = time.monotonic()
ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var" / "bench"


def child(overrides: dict, dataset: str, out_name: str) -> None:
    import resource

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunix_rt.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from runs.trainers.base import RunContext
    from runs.trainers.registry import get_trainer

    t0 = time.monotonic()
    trainer = get_trainer("tunix-sft")
    hp = trainer.validate(dataset=dataset, hyperparameters=overrides)
    out = DATA_DIR / out_name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    reports = []
    ctx = RunContext(
        run_id=0,
        hyperparameters=hp,
        dataset=dataset,
        output_dir=out,
        report=lambda step, m: reports.append((step, m)),
        log=lambda line, stream="stdout": print("  |", line),
        should_stop=lambda: False,
    )
    state = trainer.train(ctx)
    t1 = time.monotonic()
    result = trainer.evaluate(ctx, state)
    t2 = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = usage.ru_maxrss / 1024
    print(
        "RESULT "
        + json.dumps(
            {
                "train_s": round(t1 - t0, 2),
                "evaluate_s": round(t2 - t1, 2),
                "peak_rss_mb": round(rss_mb),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                "process_s": round(time.monotonic() - PROCESS_START, 1),
                "accuracy": result.metrics["accuracy"],
                "majority_baseline": result.metrics["majority_baseline"],
                "eval_loss": [round(m["eval_loss"], 4) for _, m in reports],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--dataset", default="addition@1")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--parallel", type=int, default=1, help="then run this many warm trials at once")
    parser.add_argument("--keep-cache", action="store_true", help="don't clear the compile cache first")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.child:
        child(overrides, args.dataset, args.out)
        return
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if not args.keep_cache:
        shutil.rmtree(DATA_DIR / "jax-cache", ignore_errors=True)
    env = dict(os.environ, TUNIX_RT_DATA_DIR=str(DATA_DIR), DATABASE_URL=f"sqlite:///{DATA_DIR / 'bench.sqlite3'}")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for i in range(args.runs):
        label = "cold" if i == 0 and not args.keep_cache else "warm"
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--dataset",
                args.dataset,
                *sum((["--set", s] for s in args.set), []),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
        if proc.returncode:
            print(proc.stdout[-3000:], proc.stderr[-5000:])
            raise SystemExit(f"run {i + 1} failed")
        result = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
        print(f"run {i + 1} ({label} cache): process wall {wall:.1f}s {result[7:]}")
        if i == 0:
            print("\n".join(line for line in proc.stdout.splitlines() if line.startswith("  |")))
    if args.parallel > 1:
        # Concurrent trials (as a tuning job with max_concurrent_trials > 1 runs them), warm cache.
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--child", "--dataset", args.dataset, "--out", f"run{i}"]
                + sum((["--set", s] for s in args.set), []),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(args.parallel)
        ]
        outputs = [p.communicate() for p in procs]
        wall = time.monotonic() - started
        for i, (out, err) in enumerate(outputs):
            if procs[i].returncode:
                print(out[-3000:], err[-5000:])
                raise SystemExit(f"parallel run {i + 1} failed")
            result = next(line for line in out.splitlines() if line.startswith("RESULT "))
            print(f"parallel run {i + 1}/{args.parallel}: {result[7:]}")
        print(f"{args.parallel} concurrent warm trials: {wall:.1f}s wall for all")


if __name__ == "__main__":
    main()
