from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tunix_rt.models import OwnedQuerySet, TimedMixin


class RunQuerySet(OwnedQuerySet):
    pass


class Run(TimedMixin, models.Model):
    """One training execution: trainer + dataset + hyperparameters, tracked end to end."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        # A tuning scheduler stopped it early: its metrics are kept, and it is evaluated when its
        # trainer can evaluate the model it had.
        STOPPED = "stopped", "Stopped early"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    TERMINAL_STATUSES = (Status.SUCCEEDED, Status.STOPPED, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=200, blank=True)
    trainer = models.CharField(max_length=100, db_index=True)
    dataset = models.CharField(max_length=200)
    hyperparameters = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    error_message = models.TextField(blank=True)
    error_traceback = models.TextField(blank=True)
    output_dir = models.CharField(max_length=500, blank=True)
    # Latest value of every reported metric, so lists show progress without reading the series.
    latest_metrics = models.JSONField(default=dict, blank=True)
    last_step = models.IntegerField(null=True, blank=True)
    log_lines_dropped = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True) | Q(status__in=["succeeded", "stopped", "failed", "cancelled"]),
                name="run_finished_only_when_terminal",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"Run {self.pk} ({self.trainer})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES


class MetricPoint(models.Model):
    """All metrics a run reported at one step (epoch or iteration). Idempotent on (run, step)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metric_points")
    step = models.IntegerField()
    values = models.JSONField()
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="metric_point_unique_run_step")]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.step}"


class LogLine(models.Model):
    """One captured line of a run's output. The newest LOG_MAX_LINES per run are kept."""

    class Stream(models.TextChoices):
        STDOUT = "stdout"
        STDERR = "stderr"
        SYSTEM = "system"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log_lines")
    seq = models.PositiveIntegerField()
    stream = models.CharField(max_length=8, choices=Stream.choices, default=Stream.STDOUT)
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="log_line_unique_run_seq")]

    def __str__(self) -> str:
        return self.text[:80]


class Evaluation(models.Model):
    """Metrics on held-out data, computed once per succeeded run; `primary_score` ranks runs."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="evaluation")
    metrics = models.JSONField(default=dict)
    primary_metric = models.CharField(max_length=100)
    primary_score = models.FloatField()
    # Per-item detail (e.g. predictions on held-out questions), bounded by the trainer.
    details = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.primary_metric}={self.primary_score:.4g} (run {self.run_id})"
