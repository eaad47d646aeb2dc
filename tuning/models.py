from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from runs.models import Run
from tunix_rt.models import OwnedQuerySet, TimedMixin


class TuningJobQuerySet(OwnedQuerySet):
    pass


class TuningJob(TimedMixin, models.Model):
    """A search space + objective + budget + strategy: one Ray Tune experiment."""

    class Status(models.TextChoices):
        CREATED = "created"
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Mode(models.TextChoices):
        MAX = "max"
        MIN = "min"

    class SearchAlgorithm(models.TextChoices):
        RANDOM = "random", "Random search"
        GRID = "grid", "Grid search"
        OPTUNA = "optuna", "Optuna TPE"

    class Scheduler(models.TextChoices):
        FIFO = "fifo", "FIFO (run every trial to the end)"
        ASHA = "asha", "ASHA (stop poor trials early)"
        MEDIAN = "median", "Median stopping rule"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    # Which actions each status allows; services check these, pages and the API show them.
    STARTABLE_STATUSES = (Status.CREATED,)
    CANCELLABLE_STATUSES = (Status.CREATED, Status.QUEUED, Status.RUNNING)
    RESUMABLE_STATUSES = (Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tuning_jobs")
    name = models.CharField(max_length=200)
    trainer = models.CharField(max_length=100)
    dataset = models.CharField(max_length=200)
    fixed_hyperparameters = models.JSONField(default=dict, blank=True)
    search_space = models.JSONField(default=dict)
    metric = models.CharField(max_length=100)
    mode = models.CharField(max_length=3, choices=Mode.choices, default=Mode.MAX)
    num_samples = models.PositiveIntegerField(default=10)
    max_concurrent_trials = models.PositiveIntegerField(default=1)
    search_algorithm = models.CharField(max_length=16, choices=SearchAlgorithm.choices, default=SearchAlgorithm.RANDOM)
    scheduler = models.CharField(max_length=16, choices=Scheduler.choices, default=Scheduler.FIFO)
    time_budget_s = models.PositiveIntegerField(null=True, blank=True)
    cpus_per_trial = models.FloatField(default=1.0)
    gpus_per_trial = models.FloatField(default=0.0)
    max_failed_trials = models.PositiveIntegerField(null=True, blank=True)
    # Tune's FailureConfig(max_failures): how often a failing trial is retried before it fails.
    max_trial_retries = models.PositiveIntegerField(default=0)
    seed = models.IntegerField(null=True, blank=True)
    # Promotion by policy (JobConfig.promote_to; the registry's promotion_policy_clean shape).
    promote_to = models.JSONField(null=True, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error_message = models.TextField(blank=True)
    best_run = models.ForeignKey(Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    best_hyperparameters = models.JSONField(null=True, blank=True)
    best_metric_value = models.FloatField(null=True, blank=True)
    experiment_path = models.CharField(max_length=500, blank=True)
    # What `promote_to` did when the job ended, and why (or why it failed).
    promotion_note = models.TextField(blank=True)
    # Which worker drives the experiment, until when (a lease: one experiment per job).
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # How many times a worker claimed the job (first run and every resume), bounded by the reaper.
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TuningJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(num_samples__gte=1), name="job_num_samples_positive"),
            models.CheckConstraint(condition=Q(max_concurrent_trials__gte=1), name="job_concurrency_positive"),
            models.CheckConstraint(condition=Q(cpus_per_trial__gt=0), name="job_cpus_positive"),
            models.CheckConstraint(condition=Q(gpus_per_trial__gte=0), name="job_gpus_nonnegative"),
            models.CheckConstraint(condition=Q(max_trial_retries__lte=10), name="job_trial_retries_bounded"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def can_start(self) -> bool:
        return self.status in self.STARTABLE_STATUSES

    @property
    def can_cancel(self) -> bool:
        return self.status in self.CANCELLABLE_STATUSES

    @property
    def can_resume(self) -> bool:
        """Failed or cancelled after an experiment started: Ray's saved state can continue it."""
        return self.status in self.RESUMABLE_STATUSES and bool(self.experiment_path)


class TrialQuerySet(models.QuerySet):
    def for_job(self, job: TuningJob) -> TrialQuerySet:
        return self.filter(job=job)

    def best(self, mode: str) -> TrialQuerySet:
        """Succeeded trials with a metric value, best first for the job's mode."""
        order = "-best_metric_value" if mode == TuningJob.Mode.MAX else "best_metric_value"
        return self.filter(status=Trial.Status.SUCCEEDED, best_metric_value__isnull=False).order_by(order, "id")


class Trial(TimedMixin, models.Model):
    """One sampled configuration of a job; executed as exactly one run."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        STOPPED = "stopped", "Stopped early"
        CANCELLED = "cancelled"

    TERMINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.STOPPED, Status.CANCELLED)

    class EndReason(models.TextChoices):
        """Why a trial ended: the one field pages, the API and job finalisation branch on."""

        FINISHED = "finished", "Finished"
        STOPPED_EARLY = "stopped_early", "Stopped early by the scheduler"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled with the job"
        TIME_BUDGET = "time_budget", "Not finished within the time budget"
        EXPERIMENT_STOPPED = "experiment_stopped", "Experiment stopped (failure cap or error)"
        INTERRUPTED = "interrupted", "Interrupted (its worker was lost)"

    job = models.ForeignKey(TuningJob, on_delete=models.CASCADE, related_name="trials")
    ray_trial_id = models.CharField(max_length=100)
    number = models.PositiveIntegerField(default=0)
    hyperparameters = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    run = models.OneToOneField(Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="trial")
    latest_metric_value = models.FloatField(null=True, blank=True)
    best_metric_value = models.FloatField(null=True, blank=True)
    iterations = models.PositiveIntegerField(default=0)
    end_reason = models.CharField(max_length=24, choices=EndReason.choices, blank=True)
    # The Ray node that last ran the trial (its node id), written from inside the trial.
    node = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TrialQuerySet.as_manager()

    class Meta:
        ordering = ["job", "number", "id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "ray_trial_id"], name="trial_unique_job_ray_id"),
        ]
        indexes = [
            models.Index(fields=["job", "status"]),
            models.Index(fields=["job", "best_metric_value"]),
            # Trial tables sort by number (pages and API): without it a page of a 10,000-trial job
            # sorts every trial (~15-25 ms on SQLite instead of ~2 ms).
            models.Index(fields=["job", "number"]),
        ]

    def __str__(self) -> str:
        return f"{self.job} / trial {self.number}"

    @property
    def end_description(self) -> str:
        """Why the trial ended, in words (from `end_reason`; "" while it runs)."""
        reason = self.EndReason
        if self.end_reason == reason.STOPPED_EARLY:
            return f"Stopped early at step {self.iterations}"
        if self.end_reason == reason.FAILED:
            return f"Failed: {self.error_message}" if self.error_message else "Failed"
        if self.end_reason == reason.CANCELLED and self.job.cancelled_by_id:
            return f"Cancelled by {self.job.cancelled_by.get_username()}"
        return reason(self.end_reason).label if self.end_reason else ""

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES
