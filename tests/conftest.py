"""Shared fixtures. Integration fixtures start real processes against real services and fail
loudly (never skip) when a service is missing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import hypothesis
import psutil
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.factories import UserFactory

# Real Chromium fixtures, defined once for every folder: a second session-scoped Playwright would
# start its event loop inside the first one's.
pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parent.parent

# Property-based and schema tests (hypothesis, schemathesis): derandomized in CI, so that a red run
# is reproduced by running it again; random elsewhere, to keep finding new cases. Loaded before the
# test modules are imported: their @settings inherit from the profile. docs/security.md says more.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis.settings.register_profile("random", derandomize=False)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "random"))


def test_database_url() -> str:
    """A DATABASE_URL that points other processes (workers, Ray trials) at the test database."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db.get("USER") or ""
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tunix_rt.test_settings",
        DATABASE_URL=test_database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        TUNIX_RT_DATA_DIR=str(settings.DATA_DIR),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A real `celery worker` process on the real broker, in its own process group."""

    def __init__(
        self,
        queues: str = "runs,tuning",
        name: str = "test-worker",
        extra_env: dict | None = None,
        pool: str = "solo",
        concurrency: int = 1,
    ):
        self.queues = queues
        self.pool = pool
        self.concurrency = concurrency
        self.name = name
        self.extra_env = extra_env or {}
        self.log_path = settings.DATA_DIR / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        from tunix_rt.celery import app

        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tunix_rt",
                "worker",
                "-Q",
                self.queues,
                f"--pool={self.pool}",
                f"--concurrency={self.concurrency}",
                "-n",
                f"{self.name}@%h",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=subprocess_env(**self.extra_env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.proc.returncode}; see {self.log_path}")
            replies = app.control.ping(destination=[f"{self.name}@{socket.gethostname()}"], timeout=0.5)
            if replies:
                return self
        raise RuntimeError(f"celery worker did not answer a ping within {timeout}s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever the worker left behind (Ray agents, trainer processes)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Ray's worker processes (the trials) have process groups of their own in the worker's
        # session: left alone, a killed worker's trials run on and write for a while.
        leftovers = session_processes(self.proc.pid)
        for leftover in leftovers:
            try:
                leftover.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(leftovers, timeout=10)
        self.proc.wait()
        self.log.close()


def session_processes(session_id: int) -> list[psutil.Process]:
    """The processes of a session this test process started (a worker and all it spawned)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == session_id:
                found.append(proc)
        except OSError:
            pass
    return found


def _require_broker() -> None:
    import redis

    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        return
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis broker at {url} is unreachable ({exc}); start Redis (see .ci/run).", pytrace=False)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """One real Celery worker for the whole session (it keeps one Ray instance alive)."""
    from tunix_rt.celery import app

    _require_broker()
    app.control.purge()  # messages left by an aborted earlier session would hit the new database
    # One fake GPU in the worker's embedded Ray, so GPU requests reach Ray's scheduler on machines
    # without one (tests/tuning/test_trial_environment.py); trials asking for none see no GPU.
    worker = WorkerProcess(name=f"test-worker-{os.getpid()}", extra_env={"RAY_NUM_GPUS": "1"}).start()
    yield worker
    worker.stop()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def api_client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    """Poll until `predicate()` is truthy; return its value or fail with `message`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")


def assert_processes_gone(pids: list[int], timeout: float = 5) -> None:
    """Every pid has ended (a zombie counts as ended: its parent may be gone), within `timeout`."""

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.1)
    assert [pid for pid in pids if not gone(pid)] == []
