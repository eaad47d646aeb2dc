"""How much the product adds on top of Ray Tune.

Runs the same experiment twice on this machine and prints both wall times and their ratio:

1. through the whole product: API (DRF, in-process test client) → Celery worker on the broker
   (a real `celery worker` process, solo pool, queue `tuning`) → Ray Tune in that worker → every
   trial a tracked run in the database (trial rows, run, metrics, logs, evaluation, best run);
2. a bare Ray Tune script: the same trainable logic (report once, no database), same number of
   trials, concurrency, resources and actor reuse.

Both sides start Ray before timing (a warm-up job / experiment), so the fixed `ray.init` cost is
not counted. A second figure measures result persistence: trials that report every few
milliseconds, results written to the database per second, and the same trials under bare Tune.

Usage (from the project root; needs the broker, e.g. CELERY_BROKER_URL=redis://127.0.0.1:6379/2):

    .venv/bin/python bench/tuning_overhead.py [--trials 50] [--concurrency 2] [--reports 2000]

It uses its own data folder and SQLite database (var/bench/) unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
TRAINERS = "tests.tuning.trainers.load_trainers"  # "test-quick": reports `epochs` times, no real work


def configure_environment() -> dict[str, str]:
    shutil.rmtree(BENCH_DIR, ignore_errors=True)
    BENCH_DIR.mkdir(parents=True)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tunix_rt.settings",
        TUNIX_RT_DATA_DIR=str(BENCH_DIR),
        TUNIX_RT_TRAINERS=TRAINERS,
        LOG_LEVEL="WARNING",
    )
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{BENCH_DIR / 'db.sqlite3'}")
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/2")
    sys.path.insert(0, str(ROOT))
    return dict(os.environ, PYTHONPATH=str(ROOT))


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    from tunix_rt.celery import app

    app.control.purge()
    log = open(BENCH_DIR / "worker.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tunix_rt", "worker", "-Q", "tuning", "--pool=solo",
         "-n", f"bench-{os.getpid()}@%h", "--without-mingle", "--without-gossip", "-l", "WARNING"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5):
            return proc
        if proc.poll() is not None:
            break
    raise SystemExit(f"the Celery worker did not start; see {BENCH_DIR / 'worker.log'}")


def stop_worker(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def product_run(client, *, trials: int, concurrency: int, epochs: int, delay_s: float) -> tuple[float, object]:
    """Wall time from POST start to the job's end as stored in the database."""
    from tuning.models import TuningJob

    created = client.post(
        "/api/tuning/jobs/",
        {
            "name": f"bench {trials}x{epochs}",
            "trainer": "test-quick",
            "dataset": "none",
            "search_space": {"x": {"type": "uniform", "low": 0, "high": 1}},
            "fixed_hyperparameters": {"epochs": epochs, "epoch_delay_s": delay_s},
            "num_samples": trials,
            "max_concurrent_trials": concurrency,
            "seed": 0,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    job_id = created.json()["id"]
    started = time.perf_counter()
    response = client.post(f"/api/tuning/jobs/{job_id}/start/")
    assert response.status_code == 202, response.content
    while True:
        job = TuningJob.objects.get(pk=job_id)
        if job.is_terminal:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - started
    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    return wall, job


def bare_trainable(config):
    import time as _time

    from ray import tune

    for epoch in range(1, config["epochs"] + 1):
        tune.report({"score": config["x"] * epoch / config["epochs"], "epoch": epoch})
        if config["epoch_delay_s"]:
            _time.sleep(config["epoch_delay_s"])


def bare_run(*, trials: int, concurrency: int, epochs: int, delay_s: float) -> float:
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    tuner = tune.Tuner(
        tune.with_resources(bare_trainable, {"cpu": 1.0, "gpu": 0.0}),
        param_space={"x": tune.uniform(0, 1), "epochs": epochs, "epoch_delay_s": delay_s},
        tune_config=tune.TuneConfig(
            metric="score", mode="max", num_samples=trials, reuse_actors=True,
            search_alg=BasicVariantGenerator(random_state=0, max_concurrent=concurrency),
        ),
        run_config=tune.RunConfig(storage_path=str(BENCH_DIR / "bare_ray_results"), verbose=0),
    )  # fmt: skip
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    assert not results.errors, results.errors
    return wall


def fmt(walls: list[float]) -> str:
    return "[" + ", ".join(f"{w:.2f}" for w in walls) + "] s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--reports", type=int, default=2000, help="results per trial in the persistence figure")
    parser.add_argument("--report-interval", type=float, default=0.002, help="seconds between those results")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the 50-trial experiment on each side")
    args = parser.parse_args()

    env = configure_environment()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from runs.models import MetricPoint

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    client = APIClient()
    client.force_authenticate(user)

    worker = start_worker(env)
    try:
        print("warming up the worker's Ray ...", flush=True)
        product_run(client, trials=2, concurrency=args.concurrency, epochs=1, delay_s=0)
        product_walls = []
        for _ in range(args.repeat):
            wall, job = product_run(client, trials=args.trials, concurrency=args.concurrency, epochs=1, delay_s=0)
            product_walls.append(wall)
            runs = MetricPoint.objects.filter(run__trial__job=job, run__evaluation__isnull=False).count()
            assert runs == args.trials, f"expected an evaluated run with a metric point per trial, found {runs}"

        per_reports = args.reports
        fast_wall, fast_job = product_run(
            client, trials=args.concurrency, concurrency=args.concurrency, epochs=per_reports,
            delay_s=args.report_interval,
        )  # fmt: skip
        persisted = MetricPoint.objects.filter(run__trial__job=fast_job).count()
        run_seconds = [
            (t.run.finished_at - t.run.started_at).total_seconds() for t in fast_job.trials.select_related("run")
        ]
    finally:
        stop_worker(worker)

    print("warming up bare Ray Tune ...", flush=True)
    bare_run(trials=2, concurrency=args.concurrency, epochs=1, delay_s=0)
    bare_walls = [
        bare_run(trials=args.trials, concurrency=args.concurrency, epochs=1, delay_s=0) for _ in range(args.repeat)
    ]
    bare_fast_wall = bare_run(
        trials=args.concurrency, concurrency=args.concurrency, epochs=per_reports, delay_s=args.report_interval
    )

    n = args.trials
    product_wall, bare_wall = statistics.median(product_walls), statistics.median(bare_walls)
    print()
    print(f"Experiment: {n} trials of a near-no-op trainer, concurrency {args.concurrency}, reuse_actors=True")
    print(f"  (median of {args.repeat} runs each; all runs: product {fmt(product_walls)}, bare {fmt(bare_walls)})")
    print(f"  product (API -> Celery -> Ray -> DB): {product_wall:8.2f} s")
    print(f"  bare Ray Tune script:                 {bare_wall:8.2f} s")
    print(f"  ratio product / bare:                 {product_wall / bare_wall:8.3f}   (target <= 1.10)")
    print(f"  ratio of the fastest runs:            {min(product_walls) / min(bare_walls):8.3f}")
    print(f"  added wall time per trial:            {(product_wall - bare_wall) / n:8.3f} s (target <= 0.3 s)")
    print(f"  added time per trial slot (x conc.):  {(product_wall - bare_wall) * args.concurrency / n:8.3f} s")
    print()
    interval_ms = args.report_interval * 1000
    print(f"Persistence: {args.concurrency} trials reporting {per_reports} results every {interval_ms:g} ms")
    print(f"  results persisted (metric points):    {persisted}")
    print(f"  persisted per second of job wall:     {persisted / fast_wall:8.0f} /s (target >= 300/s)")
    print(f"  per second of run time (mean run):    {persisted / max(run_seconds):8.0f} /s")
    print(f"  product wall:                         {fast_wall:8.2f} s")
    print(f"  bare Ray Tune wall:                   {bare_fast_wall:8.2f} s  (ratio {fast_wall / bare_fast_wall:.3f})")


if __name__ == "__main__":
    main()
