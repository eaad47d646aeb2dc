"""A 10,000-trial job end to end, against the same experiment as a bare Ray Tune script.

1. Through the whole product (API -> a real Celery worker, solo pool -> Ray Tune -> every trial a
   tracked run): wall time from Start to the stored end, the tuning driver's peak memory (the
   worker process and its children, RSS sampled every 0.5 s), results persisted per second.
2. The same trials as a bare Ray Tune script (bench/tuning_overhead.py's trainable), same
   concurrency and actor reuse: wall time, and the ratio (goal <= 1.10).
3. On that job afterwards: p95 and query counts of the job page, its live fragment and the trials
   API (budget 50 ms), against a 10-trial job (counts must be equal: flat).

Usage (project root; a broker, e.g. CELERY_BROKER_URL=redis://127.0.0.1:6379/2):

    nice -n 5 .venv/bin/python bench/scale.py [--trials 10000] [--concurrency 2] [--requests 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tuning_overhead import bare_run, configure_environment, product_run, start_worker, stop_worker  # noqa: E402

P95_BUDGET_MS = 50


class PeakMemory(threading.Thread):
    """Peak RSS of a process tree (the tuning worker: driver, and its embedded Ray), sampled."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.driver_peak = self.tree_peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                driver = self.root.memory_info().rss
                tree = driver + sum(c.memory_info().rss for c in self.root.children(recursive=True))
            except psutil.Error:
                continue
            self.driver_peak, self.tree_peak = max(self.driver_peak, driver), max(self.tree_peak, tree)


def page_figures(client, job, small, requests: int) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    failures = []
    hx = {"HTTP_HX_REQUEST": "true"}
    targets = {
        "job page": ("/jobs/{}/", {}),
        "live fragment": ("/jobs/{}/", hx),
        "trials API": ("/api/tuning/jobs/{}/trials/", {}),
    }
    print(f"\n{'':16} {'trials':>7} {'queries':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for name, (url, headers) in targets.items():
        counts = {}
        for each in (small, job):
            path = url.format(each.pk)
            with CaptureQueriesContext(connection) as queries:
                assert client.get(path, **headers).status_code == 200, path
            counts[each.pk] = len(queries)
            timings = []
            for _ in range(requests):
                begin = time.perf_counter()
                client.get(path, **headers)
                timings.append((time.perf_counter() - begin) * 1000)
            timings.sort()
            p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
            n = each.trials.count()
            print(f"{name:16} {n:>7,} {counts[each.pk]:>7} {statistics.median(timings):>7.1f} {p95:>7.1f}")
            if each is job and p95 > P95_BUDGET_MS:
                failures.append(f"{name}: p95 {p95:.1f} ms > {P95_BUDGET_MS} ms")
        if counts[small.pk] != counts[job.pk]:
            failures.append(f"{name}: {counts[small.pk]} queries at 10 trials, {counts[job.pk]} at {n:,}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    args = parser.parse_args()

    env = configure_environment()
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from rest_framework.test import APIClient

    from runs.models import MetricPoint

    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    api = APIClient()
    api.force_authenticate(user)

    worker = start_worker(env)
    try:
        print("warming up the worker's Ray ...", flush=True)
        product_run(api, trials=2, concurrency=args.concurrency, epochs=1, delay_s=0)
        _, small = product_run(api, trials=10, concurrency=args.concurrency, epochs=1, delay_s=0)
        memory = PeakMemory(worker.pid)
        memory.start()
        print(f"running {args.trials:,} trials through the product ...", flush=True)
        product_wall, job = product_run(api, trials=args.trials, concurrency=args.concurrency, epochs=1, delay_s=0)
        memory.done.set()
        persisted = MetricPoint.objects.filter(run__trial__job=job).count()
    finally:
        stop_worker(worker)

    print(f"running {args.trials:,} trials under bare Ray Tune ...", flush=True)
    bare_run(trials=2, concurrency=args.concurrency, epochs=1, delay_s=0)
    bare_wall = bare_run(trials=args.trials, concurrency=args.concurrency, epochs=1, delay_s=0)

    print(f"\n{args.trials:,} trials of a no-op trainer, concurrency {args.concurrency}, reuse_actors=True")
    print(f"  product (API -> Celery -> Ray -> DB): {product_wall:9.1f} s")
    print(f"  bare Ray Tune script:                 {bare_wall:9.1f} s")
    print(f"  ratio product / bare:                 {product_wall / bare_wall:9.3f}   (goal <= 1.10)")
    print(f"  driver peak RSS:                      {memory.driver_peak / 2**20:9.0f} MiB")
    print(f"  worker + its Ray, peak RSS:           {memory.tree_peak / 2**20:9.0f} MiB")
    print(f"  results persisted:                    {persisted:9,} ({persisted / product_wall:.0f} /s)")
    client = Client()
    client.force_login(user)
    failures = page_figures(client, job, small, args.requests)
    if product_wall / bare_wall > 1.10:
        failures.append(f"ratio {product_wall / bare_wall:.3f} > 1.10")
    for failure in failures:
        print(f"OVER BUDGET: {failure}")
    print("all within budget" if not failures else f"{len(failures)} budget(s) missed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
