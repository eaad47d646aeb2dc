"""The one-click demo job (tuning/demo.py) as a fresh install runs it, for several seeds.

For each seed: an empty JAX compile cache and a new Celery worker (queue `tuning`, solo pool, so a
new Ray cluster), then the demo job with that `seed` created and started through the services
and run to the end by the worker: Ray Tune trials, each a tracked run. Prints the wall time from
start to the job's end, the best run's held-out exact match (200 additions) and every trial.

Then a sweep (FIFO, every trial to the end, a wider learning-rate range, 300 steps by default to
bound its cost) measures how well each metric at the first and second report (steps 100, 200)
predicts the trial's final exact match: Spearman rank correlation.

    nice -n 5 .venv/bin/python bench/tunix_demo.py [--seeds 0 1 2] [--sweep 6]

Needs the broker (CELERY_BROKER_URL, default redis://127.0.0.1:6379/14). Uses its own data folder
and SQLite database under var/bench-demo/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench-demo"
EARLY_METRICS = (("answer_token_accuracy", 1), ("teacher_forced_exact_match", 1), ("accuracy", 1), ("eval_loss", -1))


def configure() -> dict[str, str]:
    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir(parents=True)
    os.environ.update(DJANGO_SETTINGS_MODULE="tunix_rt.settings", TUNIX_RT_DATA_DIR=str(BENCH_DIR), LOG_LEVEL="WARNING")
    os.environ["DATABASE_URL"] = f"sqlite:///{BENCH_DIR / 'db.sqlite3'}"
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return dict(os.environ, PYTHONPATH=str(ROOT))


def start_worker(env: dict[str, str], name: str) -> subprocess.Popen:
    from tunix_rt.celery import app

    app.control.purge()
    log = open(BENCH_DIR / f"{name}.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tunix_rt", "worker", "-Q", "tuning", "--pool=solo",
         "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "-l", "WARNING"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if app.control.ping(timeout=0.5):
            return proc
    raise SystemExit(f"the Celery worker did not start; see {BENCH_DIR / name}.log")


def stop_worker(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def run_job(owner, name: str, config: dict, worker: subprocess.Popen):
    """Create and start a job through the services; wait for the worker to finish it. Returns the
    job, its wall time and the CPU seconds of the worker and every process under it (Ray, trials),
    sampled each second: the figure the machine's other load does not change."""
    import psutil

    from tuning import services
    from tuning.models import TuningJob

    job = services.tuning_job_create(owner=owner, name=name, **config)
    root = psutil.Process(worker.pid)
    cpu: dict[int, float] = {}

    def sample() -> None:
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
            except psutil.Error:
                pass

    sample()
    before = sum(cpu.values())
    started = time.monotonic()
    services.tuning_job_start(job=job)
    while not TuningJob.objects.get(pk=job.pk).is_terminal:
        sample()
        time.sleep(1)
    wall = time.monotonic() - started
    sample()
    job.refresh_from_db()
    return job, wall, sum(cpu.values()) - before


def trial_rows(job) -> list[dict]:
    from tuning.models import Trial

    rows = []
    for trial in Trial.objects.filter(job=job).select_related("run").order_by("pk"):
        run = trial.run
        points = list(run.metric_points.order_by("step")) if run else []
        evaluation = getattr(run, "evaluation", None) if run else None
        rows.append(
            {
                "learning_rate": trial.hyperparameters.get("learning_rate"),
                "status": trial.status,
                "steps": points[-1].step if points else 0,
                "first": points[0].values if points else {},
                "second": points[1].values if len(points) > 1 else {},
                "final": evaluation.primary_score if evaluation else None,
                "best": trial.best_metric_value,
            }
        )
    return rows


def print_job(job, rows: list[dict]) -> None:
    for row in rows:
        final = "–" if row["final"] is None else f"{row['final']:.3f}"
        first = row["first"].get("answer_token_accuracy")
        print(
            f"    lr {row['learning_rate']:.2e}: {row['status']:<9} {row['steps']:>4} steps, "
            f"answer_token_accuracy at first report {first:.4f}, held-out exact match {final}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--sweep", type=int, default=6, help="trials of the rank-correlation sweep (0: none)")
    parser.add_argument("--sweep-range", type=float, nargs=2, default=[1e-3, 8e-3], metavar=("LOW", "HIGH"))
    parser.add_argument("--sweep-steps", type=int, default=300, help="steps of each sweep trial")
    args = parser.parse_args()
    env = configure()
    from django.contrib.auth import get_user_model

    from tuning.demo import DEMO_JOB
    from tuning.models import TuningJob

    owner = get_user_model().objects.create_user("bench", password="x")
    print(f"demo job: {DEMO_JOB}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    summary = []
    for seed in args.seeds:
        shutil.rmtree(BENCH_DIR / "jax-cache", ignore_errors=True)  # a fresh install compiles everything
        worker = start_worker(env, f"bench-demo-{seed}")
        try:
            # The seed of the search (which learning rates) and of the model (weights, data order).
            fixed = {**DEMO_JOB["fixed_hyperparameters"], "seed": seed}
            config = {**DEMO_JOB, "seed": seed, "fixed_hyperparameters": fixed}
            job, wall, cpu_s = run_job(owner, f"demo seed {seed}", config, worker)
        finally:
            stop_worker(worker)
        rows = trial_rows(job)
        best = max((r["final"] for r in rows if r["final"] is not None), default=None)
        summary.append((seed, wall, cpu_s, best, job.status, os.getloadavg()[0]))
        print(f"seed {seed}: {job.status} in {wall:.0f}s ({cpu_s:.0f} CPU-s), best run's held-out exact match "
              f"{best} (load average {os.getloadavg()[0]:.2f})")  # fmt: skip
        print_job(job, rows)
        if job.status != TuningJob.Status.SUCCEEDED:
            print(f"    error: {job.error_message}")

    if args.sweep:
        from scipy.stats import spearmanr

        low, high = args.sweep_range
        fixed = {**DEMO_JOB["fixed_hyperparameters"], "max_steps": args.sweep_steps}
        space = {"learning_rate": {"type": "loguniform", "low": low, "high": high}}
        config = {**DEMO_JOB, "scheduler": "fifo", "num_samples": args.sweep, "seed": 100}
        config.update(fixed_hyperparameters=fixed, search_space=space)
        worker = start_worker(env, "bench-demo-sweep")
        try:
            job, wall, _ = run_job(owner, "rank correlation sweep", config, worker)
        finally:
            stop_worker(worker)
        rows = [r for r in trial_rows(job) if r["final"] is not None and r["first"]]
        print(
            f"sweep: {len(rows)} trials of {args.sweep_steps} steps to the end, learning rate log-uniform "
            f"[{low:g}, {high:g}], {wall:.0f}s"
        )
        print_job(job, rows)
        finals = [r["final"] for r in rows]
        for report in ("first", "second"):
            for metric, sign in EARLY_METRICS:
                early = [sign * r[report].get(metric, float("nan")) for r in rows]
                rho = spearmanr(early, finals).statistic if len(rows) > 2 else float("nan")
                name = f"{metric}{' (negated)' if sign < 0 else ''}"
                print(f"  Spearman({report} report's {name}, final exact match) = {rho:.3f}")

    print("\nseed  wall   CPU-s  best exact match  status     load average (1 min) at the end")
    for seed, wall, cpu_s, best, status, load in summary:
        shown = "–" if best is None else f"{best:.3f}"
        print(f"{seed:>4}  {wall:>4.0f}s  {cpu_s:>5.0f}  {shown:>16}  {status:<9}  {load:.2f}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
