"""State transitions of tuning jobs and trials. Every write to a job or a trial goes through here.

`jobs`: what the web process calls (create, start, cancel, clone). `experiment`: the running
job's lease and end, for the tuning worker; `trials`: trial writes, for the worker's callbacks and
the Ray trials (ids only); `reaper`: lost work. Runs change only through `runs.services`.
"""

from __future__ import annotations

from ..config import (
    MAX_CONCURRENT_TRIALS,
    MAX_CPUS_PER_TRIAL,
    MAX_GPUS_PER_TRIAL,
    MAX_NAME_LENGTH,
    MAX_SEED,
    MAX_TIME_BUDGET_S,
    MAX_TRIAL_RETRIES,
)
from .experiment import (
    lease_owner_new,
    tuning_job_begin,
    tuning_job_finalize,
    tuning_job_heartbeat,
    tuning_job_requeue,
    tuning_job_should_stop,
    tuning_storage_path,
)
from .jobs import (
    tuning_job_cancel,
    tuning_job_clone,
    tuning_job_create,
    tuning_job_enqueue,
    tuning_job_rename,
    tuning_job_resume,
    tuning_job_start,
)
from .reaper import stale_work_reap, tuning_jobs_reclaim_from_dead_local_workers
from .trials import (
    ERROR_MESSAGE_CHARS,
    trial_complete,
    trial_fail,
    trial_node_record,
    trial_register,
    trial_result_record,
    trial_run_claim,
    trial_start,
    trials_end_unfinished,
    trials_reset_for_rerun,
    tuning_job_best_update,
)

__all__ = [
    "ERROR_MESSAGE_CHARS",
    "MAX_CONCURRENT_TRIALS",
    "MAX_CPUS_PER_TRIAL",
    "MAX_GPUS_PER_TRIAL",
    "MAX_NAME_LENGTH",
    "MAX_SEED",
    "MAX_TIME_BUDGET_S",
    "MAX_TRIAL_RETRIES",
    "lease_owner_new",
    "stale_work_reap",
    "tuning_jobs_reclaim_from_dead_local_workers",
    "trials_end_unfinished",
    "trials_reset_for_rerun",
    "tuning_job_enqueue",
    "tuning_job_heartbeat",
    "tuning_job_requeue",
    "tuning_job_rename",
    "tuning_job_resume",
    "trial_complete",
    "trial_fail",
    "trial_node_record",
    "trial_register",
    "trial_result_record",
    "trial_run_claim",
    "trial_start",
    "tuning_job_begin",
    "tuning_job_best_update",
    "tuning_job_cancel",
    "tuning_job_clone",
    "tuning_job_create",
    "tuning_job_finalize",
    "tuning_job_should_stop",
    "tuning_job_start",
    "tuning_storage_path",
]
