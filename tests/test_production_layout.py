"""The production process layout of scripts/run on the embedded defaults, end to end.

Separate processes as scripts/run starts them: a gunicorn web server, a prefork `runs` worker
(--concurrency=2, which also executes the reaper), a solo `tuning` worker and `celery beat`, all on
a fresh SQLite file and the filesystem broker under a temporary data folder, with nothing from the
test settings (no Redis, no PostgreSQL). Jobs of the example `quadratic` command trainer are driven
through the HTTP API only: one succeeds, one is cancelled while it runs, and one loses its tuning
worker to SIGKILL mid-job and is recovered by beat's reaper and a restarted tuning worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration

HEARTBEAT_INTERVAL_S = 1
# Eight missed heartbeats before the reaper takes a lease: a cold Ray start on a loaded 2-core
# machine must not look like a lost worker (the recovered job would count three attempts).
STALE_AFTER_S = 8
# Variables of the test session that must not leak into the production-like processes.
_SESSION_PREFIXES = ("DATABASE_", "CELERY_", "TUNIX_RT_", "DJANGO_", "TEST_DATABASE", "RAY_", "PYTEST")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Layout:
    """The processes of scripts/run on one temporary data folder; every one in its own process group."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_SESSION_PREFIXES)}
        self.env.update(
            DJANGO_SETTINGS_MODULE="tunix_rt.settings",
            TUNIX_RT_DATA_DIR=str(data_dir),
            DATABASE_URL=f"sqlite:///{data_dir / 'db.sqlite3'}",
            CELERY_BROKER_URL="filesystem://",
            TUNIX_RT_HEARTBEAT_INTERVAL_S=str(HEARTBEAT_INTERVAL_S),
            TUNIX_RT_STALE_AFTER_S=str(STALE_AFTER_S),
            TUNIX_RT_REAPER_INTERVAL_S="1",
            TUNIX_RT_EXPERIMENT_CHECKPOINT_S="1",
            RAY_NUM_CPUS="2",
            PYTHONUNBUFFERED="1",
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.seen: set[int] = set()  # every pid of ours ever observed, for the final sweep
        self.ready_lines: dict[str, str] = {}

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def log(self, label: str) -> str:
        return (self.data_dir / f"{label}.log").read_text(errors="replace")

    def start(self, label: str, argv: list[str], ready: str) -> None:
        """Start a process; `wait_ready` waits for the line it logs once it serves."""
        with open(self.data_dir / f"{label}.log", "ab") as log:
            self.procs[label] = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.ready_lines[label] = ready

    def wait_ready(self, *labels: str, timeout: float = 90) -> None:
        def all_ready() -> bool:
            for label in labels:
                proc = self.procs[label]
                if proc.poll() is not None:
                    pytest.fail(f"{label} exited with {proc.returncode}:\n{self.log(label)[-3000:]}", pytrace=False)
            return all(self.ready_lines[label] in self.log(label) for label in labels)

        wait_for(all_ready, timeout=timeout, interval=0.2, message=f"{', '.join(labels)} to be ready")

    def celery(self, label: str, *args: str) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "tunix_rt", *args, "-l", "INFO"]
        self.start(label, argv, ready="ready." if "worker" in args else "beat: Starting...")

    def tree(self, label: str) -> list[psutil.Process]:
        """The process and all its descendants now (Ray's raylet, GCS, trial actors, trainers)."""
        try:
            root = psutil.Process(self.procs[label].pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        self.seen.update(p.pid for p in found)
        return found

    def kill(self, label: str, sig: int = signal.SIGKILL, grace: float = 30) -> None:
        """Signal the process group, then SIGKILL whatever of its tree is left (as a crash would)."""
        proc = self.procs[label]
        members = self.tree(label)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        for member in [*members, *self.tree(label)]:
            try:
                member.kill()
            except psutil.Error:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def ours(self) -> list[psutil.Process]:
        """Live processes that carry this layout's data folder in their environment, or that we saw."""
        found = []
        for proc in psutil.process_iter(["pid", "status"]):
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            try:
                if proc.pid in self.seen or proc.environ().get("TUNIX_RT_DATA_DIR") == str(self.data_dir):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def stop_all(self) -> None:
        """SIGTERM every process at once, as scripts/run does (warm shutdowns stop Ray), then
        SIGKILL what is left of their process groups."""
        running = [label for label, proc in self.procs.items() if proc.poll() is None]
        for label in running:
            self.tree(label)
            self.procs[label].terminate()
        for label in running:
            try:
                self.procs[label].wait(30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.procs[label].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.ours():  # Ray processes that left the group or were orphaned by a kill
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture
def layout(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    layout = Layout(data_dir)
    try:
        yield layout
    finally:
        layout.stop_all()
        wait_for(lambda: not layout.ours(), timeout=20, interval=0.5, message="every process of the layout to end")


class Api:
    def __init__(self, base: str, token: str):
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, path: str) -> dict:
        response = self.session.get(self.base + path, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, json: dict | None = None, expect: int = 200) -> dict:
        response = self.session.post(self.base + path, json=json, timeout=30)
        assert response.status_code == expect, response.text
        return response.json()

    def job(self, job_id: int) -> dict:
        return self.get(f"/api/tuning/jobs/{job_id}/")

    def trials(self, job_id: int) -> list[dict]:
        return self.get(f"/api/tuning/jobs/{job_id}/trials/?page_size=200")["results"]

    def run(self, run_id: int) -> dict:
        return self.get(f"/api/runs/{run_id}/")

    def start_job(self, name: str, num_samples: int, max_concurrent_trials: int, **fixed) -> int:
        job = self.post(
            "/api/tuning/jobs/",
            {
                "name": name,
                "trainer": "quadratic",
                "dataset": "bowl",
                "search_space": {"learning_rate": {"type": "loguniform", "low": 0.01, "high": 0.4}},
                "fixed_hyperparameters": fixed,
                "num_samples": num_samples,
                "max_concurrent_trials": max_concurrent_trials,
                "seed": 5,
            },
            expect=201,
        )
        self.post(f"/api/tuning/jobs/{job['id']}/start/", expect=202)
        return job["id"]

    def finished(self, job_id: int, timeout: float = 120) -> dict:
        terminal = {"succeeded", "failed", "cancelled"}
        return wait_for(
            lambda: (job := self.job(job_id))["status"] in terminal and job,
            timeout=timeout,
            interval=0.5,
            message=f"job {job_id} to end",
        )


def assert_nothing_lost(api: Api, job: dict, *, epochs: int) -> list[dict]:
    """Exactly num_samples trials, each succeeded once with one run of every epoch once, and the
    job's best run is the best succeeded trial's."""
    trials = api.trials(job["id"])
    assert len(trials) == job["num_samples"]
    assert sorted(t["number"] for t in trials) == list(range(1, job["num_samples"] + 1))
    assert len({t["ray_trial_id"] for t in trials}) == len(trials)
    assert all(t["status"] == "succeeded" for t in trials), [(t["status"], t["error_message"]) for t in trials]
    run_ids = [t["run"]["id"] for t in trials]
    assert len(set(run_ids)) == len(run_ids)
    runs = api.get("/api/runs/?page_size=200&trainer=quadratic")["results"]
    assert sorted(r["id"] for r in runs if r["name"].startswith(f"{job['name']} · trial")) == sorted(run_ids)
    for trial in trials:
        steps = api.get(f"/api/runs/{trial['run']['id']}/metrics/")["steps"]
        assert steps == list(range(1, epochs + 1)), steps
        assert trial["run"]["status"] == "succeeded" and trial["run"]["primary_metric"] == "loss"
    best = min(trials, key=lambda t: t["best_metric_value"])  # quadratic: loss, lower is better
    assert job["best_run"]["id"] == best["run"]["id"]
    return trials


def quadratic_processes(layout: Layout) -> list[psutil.Process]:
    found = []
    for proc in layout.ours():
        try:
            if any("quadratic.py" in part for part in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_scripts_run_layout_on_sqlite_and_filesystem_broker_succeeds_cancels_and_recovers(layout):
    began = time.monotonic()
    # scripts/run: migrate, bootstrap (the admin and its password file), then the processes.
    layout.manage("migrate", "--noinput")
    assert "Log in as 'admin'" in layout.manage("bootstrap")
    layout.celery("runs", "worker", "-Q", "runs", "-n", "runs@%h", "--concurrency=2")
    layout.celery("tuning", "worker", "-Q", "tuning", "-n", "tuning@%h", "--pool=solo")
    layout.celery("beat", "beat", "-s", str(layout.data_dir / "celerybeat-schedule"))
    gunicorn = [sys.executable, "-m", "gunicorn", "tunix_rt.wsgi", "-w", "2", "-b", f"127.0.0.1:{layout.port}"]
    layout.start("web", gunicorn, ready="Booting worker")
    layout.wait_ready("runs", "tuning", "beat", "web")
    wait_for(lambda: _answers(f"{layout.base}/health/"), timeout=30, message="the web server")

    password = (layout.data_dir / "admin-password.txt").read_text().strip()
    token = requests.post(
        f"{layout.base}/api/auth/token/", data={"username": "admin", "password": password}, timeout=30
    )
    assert token.status_code == 200, token.text
    api = Api(layout.base, token.json()["token"])

    print(f"production layout: {time.monotonic() - began:.1f}s before # 1. A job that succeeds")
    # 1. A job that succeeds.
    job = api.finished(api.start_job("ok", num_samples=2, max_concurrent_trials=2, epochs=3))
    assert job["status"] == "succeeded", job["error_message"]
    assert job["attempts"] == 1
    assert_nothing_lost(api, job, epochs=3)

    print(f"production layout: {time.monotonic() - began:.1f}s before # 2. A job cancelled")
    # 2. A job cancelled while a trial runs: the command trainer's process ends with it.
    job_id = api.start_job("cancel", num_samples=2, max_concurrent_trials=1, epochs=1000, sleep_s=0.2)
    wait_for(
        lambda: any(t["status"] == "running" and t["iterations"] for t in api.trials(job_id)),
        timeout=90,
        message="a trial training",
    )
    assert quadratic_processes(layout)
    assert api.post(f"/api/tuning/jobs/{job_id}/cancel/")["cancel_requested"]
    job = api.finished(job_id, timeout=60)
    assert job["status"] == "cancelled", job["error_message"]
    trials = api.trials(job_id)
    assert trials and all(t["status"] == "cancelled" for t in trials)
    assert all(t["run"] is None or t["run"]["status"] == "cancelled" for t in trials)
    wait_for(lambda: not quadratic_processes(layout), timeout=30, message="no trainer process left")

    print(f"production layout: {time.monotonic() - began:.1f}s before # 3. The tuning worker i")
    # 3. The tuning worker is SIGKILLed mid-job (its Ray and trainers with it, as in a crash);
    # beat's reaper, on the runs worker, requeues the job and a new tuning worker resumes it.
    job_id = api.start_job("crash", num_samples=3, max_concurrent_trials=1, epochs=6, sleep_s=0.3)

    def mid_job() -> list[dict] | None:
        trials = api.trials(job_id)
        statuses = [t["status"] for t in trials]
        running = [t for t in trials if t["status"] == "running" and t["iterations"]]
        return trials if "succeeded" in statuses and running else None

    before = wait_for(mid_job, timeout=90, interval=0.2, message="a finished trial and a running one")
    finished_before = {t["id"]: t["run"]["id"] for t in before if t["status"] == "succeeded"}
    layout.kill("tuning", signal.SIGKILL, grace=0)
    assert api.job(job_id)["status"] == "running"  # nobody told the database

    print(f"production layout: {time.monotonic() - began:.1f}s before layout.celery('tuning-2'")
    layout.celery("tuning-2", "worker", "-Q", "tuning", "-n", "tuning2@%h", "--pool=solo")
    layout.wait_ready("tuning-2")
    job = api.finished(job_id)

    assert job["status"] == "succeeded", job["error_message"]
    assert job["attempts"] == 2  # claimed by the first worker, then once more after the reaper
    trials = assert_nothing_lost(api, job, epochs=6)
    for trial in trials:
        run = api.run(trial["run"]["id"])
        if trial["id"] in finished_before:  # kept, not trained again
            assert run["id"] == finished_before[trial["id"]] and run["attempts"] == 1
    assert max(api.run(t["run"]["id"])["attempts"] for t in trials) == 2  # the interrupted one ran again
    assert "reap_stale_work_task" in layout.log("runs") and "'jobs_requeued': 1" in layout.log("runs")
    assert "resuming its experiment" in layout.log("tuning-2")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code < 500
    except requests.ConnectionError:
        return False
