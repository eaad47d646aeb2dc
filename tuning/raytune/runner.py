"""Drives one tuning job's Ray Tune experiment inside the tuning worker.

One Ray connection per worker process (started on the first job, reused, shut down with the
worker by tunix_rt.celery) and one `fit()` at a time per process: Tune is not thread-safe.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from typing import Any

import ray
from django.conf import settings
from ray import tune

from tuning import services
from tuning.models import Trial, TuningJob
from tunix_rt.heartbeat import Heartbeat

from .callbacks import JobStopper, TrialRecorder, close_callbacks
from .search import IndexedSearchGenerator
from .trainables import run_trial

logger = logging.getLogger(__name__)

_fit_lock = threading.Lock()
_init_lock = threading.Lock()

# Environment the trial processes need to reach the same database, data folder and trainers as
# this worker. Ray trials inherit the environment of the cluster, not of the caller.
_PASSED_PREFIXES = ("TUNIX_RT_", "DJANGO_", "DATABASE_", "CELERY_", "POSTGRES", "PG")
_PASSED_NAMES = ("SECRET_KEY", "DEBUG", "LOG_LEVEL", "CONN_MAX_AGE", "TEST_DATABASE_NAME", "ALLOWED_HOSTS")

SCHEDULER_LABELS = {
    TuningJob.Scheduler.FIFO: "the experiment (time budget or stop)",
    TuningJob.Scheduler.ASHA: "the ASHA scheduler",
    TuningJob.Scheduler.MEDIAN: "the median stopping rule",
}
# Schedulers count epochs (every forwarded result carries "epoch"; Tune's own iteration counter
# counts forwarded results, which are coalesced for fast reporters). ASHA needs a cap on epochs;
# trials never reach it (trainers bound their own epochs).
ASHA_MAX_T = 100_000


def trial_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(_PASSED_PREFIXES) or k in _PASSED_NAMES}
    env["DJANGO_SETTINGS_MODULE"] = os.environ.get("DJANGO_SETTINGS_MODULE", "tunix_rt.settings")
    env["TUNIX_RT_DATA_DIR"] = str(settings.DATA_DIR)
    # Trials import the project (and test-only trainer modules) from the project root, and keep
    # the working directory instead of moving into their trial folder.
    paths = [str(settings.BASE_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    # A trial stopped early evaluates its model before its thread exits: a reused actor waits this
    # long for it before taking the next trial (Tune's default, 2 s, would cut a slow evaluation).
    env["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = "60"
    env["RAY_USAGE_STATS_ENABLED"] = usage_stats_flag()
    return env


def usage_stats_flag() -> str:
    """RAY_USAGE_STATS_ENABLED for this worker and its trials: off unless TUNIX_RT_RAY_USAGE_STATS."""
    return "1" if settings.RAY_USAGE_STATS else "0"


def ensure_ray() -> None:
    """Connect this process to Ray once: an embedded local cluster unless RAY_ADDRESS is set."""
    with _init_lock:
        if ray.is_initialized():
            return
        # How often Tune saves the experiment state a resumed job continues from.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(settings.TUNIX_RT["EXPERIMENT_CHECKPOINT_S"]))
        # Read by ray.init (and by the processes it starts): no usage report leaves the machine.
        os.environ["RAY_USAGE_STATS_ENABLED"] = usage_stats_flag()
        address = settings.RAY_ADDRESS or "local"
        kwargs: dict[str, Any] = {}
        if address == "local":
            kwargs.update(num_cpus=settings.RAY_NUM_CPUS, num_gpus=settings.RAY_NUM_GPUS, include_dashboard=False)
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous_sigterm = signal.getsignal(signal.SIGTERM) if in_main_thread else None
        ray.init(
            address=address,
            runtime_env={"env_vars": trial_env()},
            log_to_driver=False,
            logging_level=logging.WARNING,
            **kwargs,
        )
        if in_main_thread and previous_sigterm is not None:
            # ray.init makes SIGTERM exit the process at once; the worker's own handler does a warm
            # shutdown, during which the experiment saves its state and the job is requeued.
            signal.signal(signal.SIGTERM, previous_sigterm)


def to_ray_param_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ray Tune domains for a normalised search space (tuning.search_space)."""
    converted: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "fixed":
            converted[name] = spec["value"]
        elif kind == "choice":
            converted[name] = tune.choice(spec["values"])
        elif kind == "grid":
            converted[name] = tune.grid_search(spec["values"])
        elif kind == "uniform":
            converted[name] = tune.uniform(spec["low"], spec["high"])
        elif kind == "quniform":
            converted[name] = tune.quniform(spec["low"], spec["high"], spec["q"])
        elif kind == "loguniform":
            converted[name] = tune.loguniform(spec["low"], spec["high"])
        elif kind == "qloguniform":
            converted[name] = tune.qloguniform(spec["low"], spec["high"], spec["q"])
        elif kind == "int" and spec.get("step", 1) > 1:
            # Inclusive for q > 1. Optuna refuses a step on a log scale (the validator says so).
            sample = tune.qlograndint if spec.get("log") else tune.qrandint
            converted[name] = sample(spec["low"], spec["high"], spec["step"])
        elif kind == "int":
            # Ray's upper bound is exclusive; OptunaSearch turns this into suggest_int(low, high, log=...).
            sample = tune.lograndint if spec.get("log") else tune.randint
            converted[name] = sample(spec["low"], spec["high"] + 1)
        else:
            raise ValueError(f"{name}: unknown search space type {kind!r}")
    return converted


def early_stopping_metric(job: TuningJob) -> str:
    """What ASHA and the median rule rank trials by: the trainer's stand-in for the job's metric
    when it declares one (runs/trainers/base.py), else the job's metric itself."""
    from runs.trainers.registry import get_trainer

    try:
        declared = get_trainer(job.trainer).early_stopping_metrics
    except Exception:  # an unknown trainer fails in its trials, with its own message
        declared = {}
    return declared.get(job.metric, job.metric)


def _search_algorithm(job: TuningJob):
    if job.search_algorithm == TuningJob.SearchAlgorithm.OPTUNA:
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        # The objective is not in TuneConfig when the scheduler ranks by a stand-in metric.
        optuna = (
            OptunaSearch(metric=job.metric, mode=job.mode, seed=job.seed)
            if _stands_in(job)
            else OptunaSearch(seed=job.seed)
        )
        # Trial ids from the generator's count, so a restore after a crash gives trials lost with
        # the driver their old ids (and rows, and runs) back: see search.py.
        return IndexedSearchGenerator(ConcurrencyLimiter(optuna, max_concurrent=job.max_concurrent_trials))
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Random and grid search: grid parameters are expanded, the others sampled. The generator
    # limits concurrency itself (Tune ignores TuneConfig.max_concurrent_trials for it).
    return BasicVariantGenerator(random_state=job.seed, max_concurrent=job.max_concurrent_trials)


def _scheduler(job: TuningJob):
    # A scheduler given its own metric refuses TuneConfig's (Tune raises): one or the other.
    own = {"metric": early_stopping_metric(job), "mode": job.mode} if _stands_in(job) else {}
    if job.scheduler == TuningJob.Scheduler.ASHA:
        return tune.schedulers.ASHAScheduler(
            time_attr="epoch", max_t=ASHA_MAX_T, grace_period=1, reduction_factor=2, **own
        )
    if job.scheduler == TuningJob.Scheduler.MEDIAN:
        return tune.schedulers.MedianStoppingRule(time_attr="epoch", grace_period=1, min_samples_required=2, **own)
    return tune.schedulers.FIFOScheduler()


def _stands_in(job: TuningJob) -> bool:
    return job.scheduler != TuningJob.Scheduler.FIFO and early_stopping_metric(job) != job.metric


def check_resources(job: TuningJob, available: dict[str, float]) -> None:
    """Refuse a job whose trials could never be placed (Tune would wait for them forever)."""
    for key, wanted in (("CPU", job.cpus_per_trial), ("GPU", job.gpus_per_trial)):
        if wanted > available.get(key, 0.0):
            raise ValueError(
                f"each trial asks for {wanted:g} {key}(s) but the Ray cluster has {available.get(key, 0.0):g}"
            )


def _trainable(job: TuningJob):
    return tune.with_resources(
        tune.with_parameters(run_trial, job_id=job.pk),
        {"cpu": job.cpus_per_trial, "gpu": job.gpus_per_trial},
    )


def build_tuner(
    job: TuningJob, *, storage_path: str, name: str, recorder: TrialRecorder, stopper: JobStopper
) -> tune.Tuner:
    return tune.Tuner(
        _trainable(job),
        param_space=to_ray_param_space(job.search_space),
        tune_config=tune.TuneConfig(
            metric=None if _stands_in(job) else job.metric,
            mode=None if _stands_in(job) else job.mode,
            num_samples=job.num_samples,
            # Both search algorithms limit concurrency themselves (Tune ignores the setting for them).
            max_concurrent_trials=None,
            search_alg=_search_algorithm(job),
            scheduler=_scheduler(job),
            time_budget_s=job.time_budget_s,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            stop=stopper,
            callbacks=[recorder],
            # A failing trial is retried max_trial_retries times (its run reset) before it fails.
            failure_config=tune.FailureConfig(max_failures=job.max_trial_retries),
            verbose=0,
        ),
    )


class ExperimentNotRestorable(RuntimeError):
    """The job has trials but Ray's experiment state is missing or unreadable."""


def restore_or_build_tuner(job: TuningJob, *, storage_path: str, name: str) -> tuple[tune.Tuner, bool]:
    """Continue the job's experiment from Ray's saved state when there is one (a resumed job:
    finished trials are not run again, unfinished and errored ones are); else a new experiment."""
    path = os.path.join(storage_path, name)
    if tune.Tuner.can_restore(path):
        # Callbacks and the stopper come back from the pickled state (built from ids only).
        return tune.Tuner.restore(path, trainable=_trainable(job), resume_errored=True), True
    if Trial.objects.filter(job_id=job.pk).exists():
        raise ExperimentNotRestorable(
            f"the job already ran trials but Ray's experiment state at {path} cannot be restored; "
            "clone the job to run it again"
        )
    recorder = TrialRecorder(job.pk, job.metric, job.mode, SCHEDULER_LABELS[job.scheduler])
    stopper = JobStopper(job.pk)
    return build_tuner(job, storage_path=storage_path, name=name, recorder=recorder, stopper=stopper), False


# Why this process asked its running fit() to stop and save its state ("" while none did).
_interrupt_reason = ""


def request_interrupt(reason: str) -> bool:
    """Make the running fit() save Ray's experiment state and return, through Tune's own
    SIGUSR1 handler (installed while fit() runs in the main thread). False if none is running."""
    global _interrupt_reason
    if not _fit_lock.locked():
        return False  # no job in this process (Tune leaves its handler installed after a fit)
    _interrupt_reason = _interrupt_reason or reason  # read before fit() starts, and after it returns
    handler = signal.getsignal(signal.SIGUSR1)
    if callable(handler) and "signal_interrupt_tune_run" in getattr(handler, "__qualname__", ""):
        try:
            handler(signal.SIGUSR1, None)
        except ValueError:  # it also resets SIGINT, which only the main thread may do; the stop is set
            pass
    return True


def lease_keeper(job_id: int, lease_owner: str) -> Heartbeat:
    """Renews the job's lease (and heartbeat) every HEARTBEAT_INTERVAL_S. If the lease was taken
    (the reaper judged this worker lost), the experiment is interrupted and nothing more written."""

    def lost() -> None:
        logger.error("tuning job %s: lease lost; interrupting this experiment", job_id)
        request_interrupt("lease lost")

    return Heartbeat(
        "tuning-lease",
        beat=lambda: services.tuning_job_heartbeat(job_id=job_id, lease_owner=lease_owner),
        on_lost=lost,
    )


def tuning_job_run(*, job_id: int) -> TuningJob | None:
    """Claim a queued job and run (or resume) its experiment to the end. None if the job was not
    queued, or was given back to the queue (worker shutting down, lease lost)."""
    global _interrupt_reason
    if not _fit_lock.acquire(blocking=False):
        # The solo/concurrency-1 tuning worker never gets here; a misconfigured pool would crash Tune.
        raise RuntimeError("another experiment is running in this process; run the tuning queue with concurrency 1")
    try:
        # A resumed job continues its own experiment folder; a new one gets a unique folder, so a
        # job id reused after a database reset never restores someone else's experiment.
        previous = TuningJob.objects.filter(pk=job_id).values_list("experiment_path", flat=True).first()
        if previous:
            storage_path, name = os.path.split(previous)
        else:
            storage_path, name = services.tuning_storage_path(), f"job-{job_id}-{uuid.uuid4().hex[:8]}"
        lease_owner = services.lease_owner_new()
        if not services.tuning_job_begin(
            job_id=job_id, lease_owner=lease_owner, experiment_path=os.path.join(storage_path, name)
        ):
            logger.info("tuning job %s is not queued; not running it", job_id)
            return None
        _interrupt_reason = ""
        keeper = lease_keeper(job_id, lease_owner)
        keeper.start()
        error = ""
        job = TuningJob.objects.get(pk=job_id)
        try:
            ensure_ray()
            check_resources(job, ray.cluster_resources())
            tuner, restored = restore_or_build_tuner(job, storage_path=storage_path, name=name)
            if restored:
                logger.warning("tuning job %s: resuming its experiment from %s", job_id, job.experiment_path)
            if not _interrupt_reason:  # a shutdown that came during ray.init: requeue at once
                tuner.fit()
        except Exception as exc:
            logger.exception("tuning job %s: the experiment failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            keeper.stop()
            close_callbacks(job_id)  # every trial write applied before reconciling
        if keeper.lost:
            return None  # another worker owns the job now: write nothing
        if _interrupt_reason:
            # Ray saved the experiment state: the next worker resumes it (no trial lost).
            if services.tuning_job_requeue(job_id=job_id, lease_owner=lease_owner, reason=_interrupt_reason):
                try:
                    services.tuning_job_enqueue(job_id=job_id)
                except Exception:  # the reaper re-sends queued jobs
                    logger.exception("tuning job %s: could not re-send its task", job_id)
            return None
        stop_reason = services.tuning_job_should_stop(job_id=job_id)
        return services.tuning_job_finalize(
            job_id=job_id, stop_reason="" if stop_reason == "cancelled" else stop_reason, error=error
        )
    finally:
        _fit_lock.release()
