"""Load test: 50 users for a minute on a local server while tuning jobs run (issue 5).

Starts, on loopback only, a throw-away installation: a SQLite database and data folder under a
temporary folder, gunicorn (3 processes x 4 threads, as in production; `--server runserver` for Django's threaded
development server; DEBUG=False, static files collected) and one
Celery tuning worker (solo pool, embedded Ray). One "background" job starts first and runs during
the whole test. Then USERS virtual users, each a thread with its own token and session, mix for
DURATION seconds:

* API reads: job list, one of their jobs, its trials, the trainers, the run list;
* job creation (`POST /api/tuning/jobs/`); the first START_JOBS created jobs are also started;
* live fragments as htmx polls them: the job list table, their job's live part and charts, and
  (the WATCHERS staff users) the running background job's live part and charts.

Afterwards it cancels the created jobs it did not start, waits (at most WAIT seconds) for every
job to reach a terminal state, prints count / p50 / p95 / max per kind and the 5xx count, and exits
1 when a 5xx occurred, a job did not end, or a budgeted p95 is over 300 ms. Everything it
started is stopped on exit, whatever happens (each child runs in its own process group).

    CELERY_BROKER_URL=redis://127.0.0.1:6379/5 .venv/bin/python bench/load.py [--users 50] [--duration 60]

Without CELERY_BROKER_URL it uses a filesystem broker in the temporary folder. The broker's
queues are purged at start: give it a Redis database nobody else uses.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
P95_BUDGET_MS = 300.0
RAMP_S = 2.0
# The budget covers the API reads, job creation and live fragments; a start (a handful per
# run) is shown but not budgeted.
BUDGETED = ("api read", "api create job", "fragment: job list", "fragment: job", "fragment: charts")
HARD_LIMIT_S = 900  # the whole script, whatever the arguments: it always stops by itself

SMALL_JOB = {
    "trainer": "sklearn-mlp",
    "dataset": "iris",
    "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-1}},
    "fixed_hyperparameters": {"epochs": 2, "hidden_units": 8},
    "num_samples": 2,
    "max_concurrent_trials": 2,
}
BACKGROUND_JOB = {
    "name": "background job",
    "trainer": "sklearn-mlp",
    "dataset": "iris",
    "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-1}},
    "fixed_hyperparameters": {"epochs": 8, "hidden_units": 8, "epoch_delay_s": 0.5},
    "max_concurrent_trials": 2,
}
TERMINAL = {"succeeded", "failed", "cancelled"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _loopback_only(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to load {url}: loopback addresses only")


class Stack:
    """The server and the worker, each in its own process group; `stop` ends both."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env = folder, env
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [PY, *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # Ray agents and trainer processes left in the group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _setup(env: dict[str, str], users: int, watchers: int) -> list[dict]:
    """Migrate, collect static files, create users with tokens and sessions (in this process)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from accounts.services import token_create

    call_command("migrate", verbosity=0)
    call_command("collectstatic", verbosity=0, interactive=False)
    accounts = []
    for i in range(users):
        user = get_user_model().objects.create_user(f"load{i}", password=secrets.token_hex(8), is_staff=i < watchers)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        _, key = token_create(user=user, name="load bench", expires_in_days=1)
        accounts.append({"name": user.username, "token": key, "session": session.session_key})
    from django.db import connections

    connections.close_all()
    return accounts


def _purge_broker(env: dict[str, str]) -> None:
    subprocess.run(
        [PY, "-m", "celery", "-A", "tunix_rt", "purge", "-f", "-Q", "runs,tuning"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the server at {url} did not answer within {timeout}s")


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: list[str] = []

    def request(self, session: requests.Session, kind: str, method: str, url: str, **kwargs):
        started = time.perf_counter()
        try:
            response = session.request(method, url, timeout=30, **kwargs)
        except requests.RequestException as exc:
            with self.lock:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
                self.statuses[kind][0] += 1
            return None
        elapsed = (time.perf_counter() - started) * 1000
        with self.lock:
            self.times[kind].append(elapsed)
            self.statuses[kind][response.status_code] += 1
            if response.status_code >= 500:
                self.errors.append(f"{kind}: {response.status_code} {method} {url}")
        return response


class VirtualUser(threading.Thread):
    def __init__(
        self,
        base: str,
        account: dict,
        recorder: Recorder,
        stop_at: float,
        background_id: int,
        starter: threading.Semaphore,
        think: tuple[float, float],
        watcher: bool,
        seed: int,
    ):
        super().__init__(daemon=True, name=account["name"])
        self.base, self.account, self.recorder, self.stop_at = base, account, recorder, stop_at
        self.background_id, self.starter, self.think, self.watcher = background_id, starter, think, watcher
        self.random = random.Random(seed)
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Token {account['token']}"
        self.page = requests.Session()
        self.page.cookies.set("sessionid", account["session"], domain=urlparse(base).hostname)
        self.page.headers["HX-Request"] = "true"
        self.jobs: list[int] = []
        self.started: list[int] = []

    def _create(self) -> None:
        body = {**SMALL_JOB, "name": f"{self.account['name']} job {len(self.jobs) + 1}"}
        response = self.recorder.request(self.api, "api create job", "POST", f"{self.base}/api/tuning/jobs/", json=body)
        if response is not None and response.status_code == 201:
            job_id = response.json()["id"]
            self.jobs.append(job_id)
            if not self.started and self.starter.acquire(blocking=False):
                started = self.recorder.request(
                    self.api, "api start job", "POST", f"{self.base}/api/tuning/jobs/{job_id}/start/"
                )
                if started is not None and started.status_code == 202:
                    self.started.append(job_id)

    def _read(self) -> None:
        base, job = self.base, (self.random.choice(self.jobs) if self.jobs else None)
        choice = self.random.random()
        if choice < 0.3:
            self.recorder.request(self.api, "api read", "GET", f"{base}/api/tuning/jobs/?page_size=20")
        elif choice < 0.5 and job:
            self.recorder.request(self.api, "api read", "GET", f"{base}/api/tuning/jobs/{job}/")
        elif choice < 0.65 and job:
            self.recorder.request(self.api, "api read", "GET", f"{base}/api/tuning/jobs/{job}/trials/")
        elif choice < 0.8:
            self.recorder.request(self.api, "api read", "GET", f"{base}/api/runs/?page_size=20")
        else:
            self.recorder.request(self.api, "api read", "GET", f"{base}/api/trainers/")

    def _poll(self) -> None:
        base = self.base
        job = self.background_id if self.watcher else (self.random.choice(self.jobs) if self.jobs else None)
        choice = self.random.random()
        if job is None or choice < 0.25:
            self.recorder.request(self.page, "fragment: job list", "GET", f"{base}/")
        elif choice < 0.8:
            self.recorder.request(self.page, "fragment: job", "GET", f"{base}/jobs/{job}/")
        else:
            self.recorder.request(self.page, "fragment: charts", "GET", f"{base}/jobs/{job}/charts/")

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            choice = self.random.random()
            if choice < 0.1 or not self.jobs:
                self._create()
            elif choice < 0.55:
                self._read()
            else:
                self._poll()
            time.sleep(self.random.uniform(*self.think))


def _stop(signum, frame):
    raise SystemExit("stopped (time limit or SIGTERM)")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--watchers", type=int, default=10, help="staff users polling the background job")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--start-jobs", type=int, default=8, help="created jobs that are also started")
    parser.add_argument("--think", default="0.5,1.5", help="pause between a user's requests: min,max seconds")
    parser.add_argument("--wait", type=float, default=300.0, help="at most this long for jobs to end")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    parser.add_argument("--server", choices=("gunicorn", "runserver"), default="gunicorn")
    args = parser.parse_args()
    if not (1 <= args.users <= 500 and 1 <= args.duration <= 600 and 0 <= args.wait <= 600):
        raise SystemExit("bounds: 1-500 users, 1-600 s of load, at most 600 s of waiting")
    think = tuple(float(x) for x in args.think.split(","))
    watchdog = threading.Timer(HARD_LIMIT_S, lambda: os.kill(os.getpid(), signal.SIGTERM))
    watchdog.daemon = True
    watchdog.start()

    folder = Path(tempfile.mkdtemp(prefix="tunix-load-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    _loopback_only(base)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
        "TUNIX_RT_DATA_DIR": str(folder),
        "DATABASE_URL": f"sqlite:///{folder}/load.sqlite3",
        "DEBUG": "False",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SECURE_SSL_REDIRECT": "False",
        "SECURE_HSTS_SECONDS": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "TUNIX_RT_MAX_ACTIVE_JOBS_PER_USER": "5",
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("CELERY_BROKER_URL", "filesystem://")
    if not env["CELERY_BROKER_URL"].startswith(("filesystem://", "memory://")):
        _loopback_only(env["CELERY_BROKER_URL"])
    stack = Stack(folder, env)
    signal.signal(signal.SIGTERM, _stop)
    try:
        t0 = time.monotonic()
        accounts = _setup(env, args.users, min(args.watchers, args.users))
        _purge_broker(env)
        stack.start(
            "worker",
            [
                "-m",
                "celery",
                "-A",
                "tunix_rt",
                "worker",
                "-Q",
                "tuning,runs",
                "--pool=solo",
                "-n",
                f"load-{port}@%h",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
        )
        if args.server == "gunicorn":
            # The production server (docs/operations.md): processes use both cores; runserver is one.
            server = ["-m", "gunicorn", "tunix_rt.wsgi:application", "-b", f"127.0.0.1:{port}"]
            # Keep-alive outlasts the users' think time: else a reused connection races its close.
            stack.start(
                "server",
                [*server, "--workers", "3", "--threads", "4", "--worker-class", "gthread", "--keep-alive", "30"],
            )
        else:
            stack.start("server", ["manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"])
        _wait_http(f"{base}/health/", 60)
        print(f"setup {time.monotonic() - t0:.1f}s; server {base}; data {folder}", flush=True)

        owner = requests.Session()
        owner.headers["Authorization"] = f"Token {accounts[0]['token']}"
        # About 5 s per trial, two at a time: enough trials to outlast the load.
        rounds = int(args.duration // 4) + 4
        job = {**BACKGROUND_JOB, "num_samples": 2 * rounds}
        background = owner.post(f"{base}/api/tuning/jobs/", json=job, timeout=30)
        background.raise_for_status()
        background_id = background.json()["id"]
        owner.post(f"{base}/api/tuning/jobs/{background_id}/start/", timeout=30).raise_for_status()
        deadline = time.monotonic() + 120
        while owner.get(f"{base}/api/tuning/jobs/{background_id}/", timeout=30).json()["status"] != "running":
            if time.monotonic() > deadline:
                raise SystemExit("the background job did not start running within 120 s (see worker.log)")
            time.sleep(0.5)
        print("background job running; load starts", flush=True)

        recorder = Recorder()
        starter = threading.Semaphore(args.start_jobs)
        stop_at = time.monotonic() + args.duration
        users = [
            VirtualUser(base, account, recorder, stop_at, background_id, starter, think, i < args.watchers, seed=i)
            for i, account in enumerate(accounts)
        ]
        load_started = time.monotonic()
        # Ramp up over RAMP_S: runserver listens with a backlog of 10 connections, and 50 connects in
        # the same millisecond overflow it (the kernel then resets some of them).
        for user in users:
            user.start()
            time.sleep(RAMP_S / len(users))
        for user in users:
            user.join(args.duration + 60)
        load_s = time.monotonic() - load_started
        background_state = owner.get(f"{base}/api/tuning/jobs/{background_id}/", timeout=30).json()["status"]

        # Created but never started: cancel them (a created job is not terminal).
        cancelled = 0
        for user in users:
            for job_id in set(user.jobs) - set(user.started):
                if user.api.post(f"{base}/api/tuning/jobs/{job_id}/cancel/", timeout=30).status_code == 200:
                    cancelled += 1
        started = [job for user in users for job in user.started]
        all_jobs = [background_id] + [job for user in users for job in user.jobs]
        staff = requests.Session()
        staff.headers["Authorization"] = f"Token {accounts[0]['token']}"  # load0 is a watcher: staff
        wait_deadline = time.monotonic() + args.wait
        states: dict[int, str] = {}
        while True:
            states = {job: staff.get(f"{base}/api/tuning/jobs/{job}/", timeout=30).json()["status"] for job in all_jobs}
            if all(state in TERMINAL for state in states.values()) or time.monotonic() > wait_deadline:
                break
            time.sleep(2)
        waited = time.monotonic() - wait_deadline + args.wait

        total = sum(len(v) for v in recorder.times.values())
        print(
            f"\n{args.users} users ({args.watchers} watching the running job), {load_s:.0f} s of load, "
            f"{total} requests ({total / load_s:.1f}/s); background job was {background_state} during the load"
        )
        print(f"{'kind':<20} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  statuses")
        failed = False
        for kind in sorted(recorder.times):
            times = recorder.times[kind]
            p95 = _percentile(times, 0.95)
            statuses = ", ".join(f"{code}: {n}" for code, n in sorted(recorder.statuses[kind].items()))
            budgeted = kind in BUDGETED
            over = "  OVER BUDGET" if budgeted and p95 > P95_BUDGET_MS else ("" if budgeted else "  (not budgeted)")
            failed |= over == "  OVER BUDGET"
            print(
                f"{kind:<20} {len(times):>6} {statistics.median(times):>8.1f} {p95:>8.1f} {max(times):>8.1f}  "
                f"{statuses}{over}"
            )
        errors_5xx = sum(n for s in recorder.statuses.values() for code, n in s.items() if code >= 500)
        transport_errors = sum(s.get(0, 0) for s in recorder.statuses.values())
        counts = defaultdict(int)
        for state in states.values():
            counts[state] += 1
        not_terminal = {job: state for job, state in states.items() if state not in TERMINAL}
        print(f"5xx: {errors_5xx}; connection errors: {transport_errors}")
        print(
            f"jobs: {len(all_jobs)} created (1 background, {len(started)} started by users, {cancelled} cancelled "
            f"unstarted); final states {dict(counts)}; waited {waited:.0f} s"
        )
        for line in recorder.errors[:10]:
            print("  error:", line)
        if not_terminal:
            print(f"NOT TERMINAL after {args.wait:.0f} s: {not_terminal}")
        failed |= bool(errors_5xx or transport_errors or not_terminal)
        print("FAIL" if failed else "PASS", f"(budget: p95 < {P95_BUDGET_MS:.0f} ms per kind, no 5xx, all jobs end)")
        return 1 if failed else 0
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
