"""A real two-node Ray cluster on this machine (`ray start --head` and one more `ray start`, each in
a process group this module owns and ends), and two tuning workers pointed at it with
RAY_ADDRESS: trials spread over both nodes, each recording the node that ran it; two jobs at once,
each seeing only its own trials; per-trial GPUs on the node started with --num-gpus=1; the worker
node killed mid-job.

One cluster for the whole module (starting one costs tens of seconds on a loaded machine); the
node-kill test comes last, as it leaves the head alone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from django.urls import reverse

from runs.models import LogLine, Run
from tests.conftest import ROOT, WorkerProcess, session_processes, wait_for
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

    def node_ids(self) -> dict[str, str]:
        """Ray node ids by label: the head, and the node with the GPU."""
        probe = (
            f"import ray, json; ray.init(address={self.address!r}, logging_level='ERROR');"
            "print(json.dumps({('head' if 'node:__internal_head__' in n['Resources'] else 'node'): n['NodeID']"
            " for n in ray.nodes() if n['Alive']}))"
        )
        result = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=60)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def kill(self, label: str) -> None:
        """SIGKILL a node: its `ray start`, raylet and the trial processes it runs."""
        proc = self.nodes[label]
        doomed = session_processes(proc.pid)
        for each in doomed:
            try:
                each.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(doomed, timeout=10)
        proc.wait()

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
def cluster_workers(cluster, broker):
    """Two tuning workers (drivers) on the shared cluster: two jobs can run at once."""
    env = {**faultkit.WORKER_ENV, **CLUSTER_ENV, "CELERY_BROKER_URL": broker.url, "RAY_ADDRESS": cluster.address}
    workers = [WorkerProcess(name=f"cluster-{n}-{os.getpid()}", extra_env=env).start() for n in (1, 2)]
    yield workers
    for worker in workers:
        worker.stop(sig=signal.SIGKILL, timeout=1)


def test_trials_spread_over_both_nodes_and_record_the_node_that_ran_them(cluster_workers, api_client, client, user):
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


def test_two_workers_run_two_jobs_at_once_on_the_shared_cluster_each_seeing_only_its_own_trials(
    cluster_workers, api_client
):
    # One CPU per trial and two trials at a time each: both jobs fit on the cluster's four CPUs.
    values = {"left": [0.1, 0.2], "right": [0.8, 0.9]}
    jobs = {
        side: start_job(
            api_client,
            name=f"concurrent {side}",
            search_space={"x": {"type": "grid", "values": xs}},
            search_algorithm="grid",
            num_samples=1,
            max_concurrent_trials=2,
            cpus_per_trial=1,
            fixed_hyperparameters={"epochs": 3, "epoch_delay_s": 0.5},
        )
        for side, xs in values.items()
    }
    ids = [job.pk for job in jobs.values()]
    running = TuningJob.objects.filter(pk__in=ids, status=TuningJob.Status.RUNNING)
    wait_for(lambda: running.count() == 2, timeout=120, interval=0.2, message="both jobs running at once")
    assert len(set(running.values_list("lease_owner", flat=True))) == 2  # two drivers, one per worker

    for side, job in jobs.items():
        job = faultkit.finished(job, timeout=180)
        assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
        trials = assert_consistent(job, epochs=3)  # and no run of the other job under its name
        assert sorted(t.hyperparameters["x"] for t in trials) == values[side]
        assert sorted(t.run.hyperparameters["x"] for t in trials) == values[side]
        listed = api_client.get(f"{JOBS}{job.pk}/trials/").json()
        rows = listed["results"] if isinstance(listed, dict) else listed
        assert sorted(row["id"] for row in rows) == sorted(t.pk for t in trials)


def _trial_logs(job: TuningJob) -> list[str]:
    return [
        "\n".join(LogLine.objects.filter(run_id=run_id).order_by("seq").values_list("text", flat=True))
        for run_id in Trial.objects.filter(job=job).values_list("run_id", flat=True)
    ]


def test_half_a_gpu_per_trial_runs_two_at_once_and_a_whole_one_runs_them_in_turn_on_the_gpu_node(
    cluster, cluster_workers, api_client
):
    gpu_node = cluster.node_ids()["node"]
    common = {
        "trainer": "test-env",
        "search_space": {"x": {"type": "grid", "values": [0.3, 0.7]}},
        "search_algorithm": "grid",
        "num_samples": 1,
        "max_concurrent_trials": 2,
        "cpus_per_trial": 0.5,
    }
    # Both at once (one per worker): the half-GPU trials wait for each other to have begun.
    half = start_job(
        api_client, name="half gpu", gpus_per_trial=0.5, fixed_hyperparameters={"await_running": 2}, **common
    )
    whole = start_job(api_client, name="whole gpu", gpus_per_trial=1, **common)
    half, whole = faultkit.finished(half, timeout=180), faultkit.finished(whole, timeout=180)

    for job in (half, whole):
        assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
        trials = assert_consistent(job, epochs=1)
        assert {t.node for t in trials} == {gpu_node}  # the only node with a GPU
        logs = _trial_logs(job)
        assert len(logs) == 2 and all("env CUDA_VISIBLE_DEVICES=0" in log for log in logs), logs
    assert all("saw 2 runs of job" in log for log in _trial_logs(half))  # two halves of one GPU at once
    first, second = sorted(
        Run.objects.filter(trial__job=whole).values_list("started_at", "finished_at"), key=lambda times: times[0]
    )
    assert second[0] >= first[1]  # one whole GPU: the second trial began after the first ended


def test_the_worker_node_killed_mid_job_has_its_trials_retried_on_the_head_and_the_job_succeeds(
    cluster, cluster_workers, api_client
):
    # Last in this module: the cluster has one node left afterwards.
    nodes = cluster.node_ids()
    job = start_job(
        api_client,
        name="node lost",
        search_space={"x": {"type": "grid", "values": [0.2, 0.4, 0.6, 0.8]}},
        search_algorithm="grid",
        num_samples=1,
        max_concurrent_trials=4,
        cpus_per_trial=1,
        max_trial_retries=2,
        fixed_hyperparameters={"epochs": 8, "epoch_delay_s": 0.5},
    )
    on_lost_node = Trial.objects.filter(job=job, node=nodes["node"], status=Trial.Status.RUNNING)
    wait_for(
        lambda: on_lost_node.filter(run__metric_points__isnull=False).exists(),
        timeout=120,
        interval=0.2,
        message="a trial training on the worker node",
    )
    lost = set(on_lost_node.values_list("pk", flat=True))  # running there when it dies
    cluster.kill("node")
    job = faultkit.finished(job, timeout=180)

    assert job.status == TuningJob.Status.SUCCEEDED, job.error_message
    trials = assert_consistent(job, epochs=8)
    assert len(trials) == 4 and all(t.status == Trial.Status.SUCCEEDED for t in trials)
    assert lost
    for trial in trials:
        if trial.pk in lost:  # retried, and finished on the head
            assert trial.node == nodes["head"] and trial.run.attempts >= 2, (trial.number, trial.node)
