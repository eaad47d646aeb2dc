"""A real two-node Ray cluster on this machine (`ray start --head` and one more `ray start`, each in
a process group this module owns and ends), and a tuning worker pointed at it with RAY_ADDRESS:
trials spread over both nodes, each recording the node that ran it.

One cluster for the whole module (starting one costs tens of seconds on a loaded machine).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.urls import reverse

from tests.conftest import ROOT, WorkerProcess, wait_for
from tests.tuning import faultkit
from tests.tuning.faultkit import JOBS, assert_consistent, start_job
from tuning.models import Trial, TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

broker = faultkit.broker
RAY = str(Path(sys.executable).with_name("ray"))
CLUSTER_ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    """`ray start --block` processes: a head and worker nodes, each its own process group."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tempfile.mkdtemp(prefix="ray-test-")
        self.nodes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, **CLUSTER_ENV}

    def _start(self, label: str, *args: str) -> None:
        log = open(Path(self.temp_dir) / f"{label}.log", "ab")
        self.nodes[label] = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> RayCluster:
        self._start(
            "head",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            f"--temp-dir={self.temp_dir}",
        )
        wait_for(lambda: self.alive_nodes() >= 1, timeout=90, interval=1, message="the Ray head")
        self._start("node", f"--address={self.address}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=1")
        wait_for(lambda: self.alive_nodes() >= 2, timeout=90, interval=1, message="the second Ray node")
        return self

    def alive_nodes(self) -> int:
        probe = (
            f"import ray; ray.init(address={self.address!r}, logging_level='ERROR');"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        result = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=60)
        lines = result.stdout.strip().splitlines()
        return int(lines[-1]) if result.returncode == 0 and lines and lines[-1].isdigit() else 0

    def stop(self) -> None:
        for proc in self.nodes.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.nodes.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            try:  # raylet, GCS and workers left behind
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def cluster():
    started = RayCluster()
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def cluster_worker(cluster, broker):
    env = {**faultkit.WORKER_ENV, **CLUSTER_ENV, "CELERY_BROKER_URL": broker.url, "RAY_ADDRESS": cluster.address}
    worker = WorkerProcess(name=f"cluster-{os.getpid()}", extra_env=env).start()
    yield worker
    worker.stop(sig=signal.SIGKILL, timeout=1)


def test_trials_spread_over_both_nodes_and_record_the_node_that_ran_them(cluster_worker, api_client, client, user):
    # Four trials that wait until all four train at once, one CPU each: two per two-CPU node.
    job = start_job(
        api_client,
        name="spread",
        trainer="test-env",
        search_space={"x": {"type": "grid", "values": [0.1, 0.2, 0.3, 0.4]}},
        num_samples=1,
        max_concurrent_trials=4,
        cpus_per_trial=1,
        fixed_hyperparameters={"await_running": 4},
    )
    job = faultkit.finished(job, timeout=180)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    trials = assert_consistent(job, epochs=1)
    nodes = {t.node for t in trials}
    assert len(nodes) == 2 and all(len(node) == 56 for node in nodes), nodes
    listed = api_client.get(f"{JOBS}{job.pk}/trials/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert {row["node"] for row in rows} == nodes
    client.force_login(user)
    page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert all(node[:6] in page for node in nodes)
    run_page = client.get(reverse("run_detail", args=[trials[0].run_id])).content.decode()
    assert trials[0].node[:10] in run_page
    assert Trial.objects.filter(job=job).exclude(node="").count() == 4
