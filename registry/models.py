"""The model registry: named models, their immutable versions, aliases and the aliases' history.

A version records where it came from as plain values (run, job and trial ids, the trainer, the
dataset and its hash) besides a link to the run: the record outlives the run, its job and its
output folder. Its files live in the `registry` storage, content-addressed (`registry.storage`).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from runs.models import Run
from tunix_rt.models import OwnedQuerySet

MAX_MODEL_NAME = 100
MAX_ALIAS_NAME = 50
MAX_DESCRIPTION = 5000
MAX_TAGS = 20
MAX_TAG_LENGTH = 50


class RegisteredModelQuerySet(OwnedQuerySet):
    pass


class RegisteredModel(models.Model):
    """A name under which a user keeps versions of one model; names are unique per owner."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="registered_models")
    name = models.SlugField(max_length=MAX_MODEL_NAME)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = RegisteredModelQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="registered_model_unique_owner_name")]

    def __str__(self) -> str:
        return self.name


class ModelVersionQuerySet(OwnedQuerySet):
    owner_field = "model__owner"


class ModelVersion(models.Model):
    """One promoted run, frozen: lineage, hyperparameters, scores and a manifest of its files.
    Nothing updates a version after it is created."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    # The live link (null once the run is deleted) and the id it had, which never changes.
    run = models.ForeignKey(Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="model_versions")
    source_run_id = models.PositiveBigIntegerField()
    source_job_id = models.PositiveBigIntegerField(null=True, blank=True)
    source_job_name = models.CharField(max_length=200, blank=True)
    source_trial_id = models.PositiveBigIntegerField(null=True, blank=True)
    source_trial_number = models.PositiveIntegerField(null=True, blank=True)
    trainer = models.CharField(max_length=100)
    dataset = models.CharField(max_length=200)
    # For a trace dataset (`name@version`): its content hash (traces.models.TraceDataset).
    dataset_hash = models.CharField(max_length=64, blank=True)
    hyperparameters = models.JSONField(default=dict)
    # The run's evaluation on held-out data, and its latest reported metrics, at promotion.
    metrics = models.JSONField(default=dict)
    run_metrics = models.JSONField(default=dict)
    primary_metric = models.CharField(max_length=100, blank=True)
    primary_score = models.FloatField(null=True, blank=True)
    # [{"path", "size", "sha256"}], sorted by path; the files are blobs named by their sha256.
    manifest = models.JSONField(default=list)
    total_size = models.PositiveBigIntegerField(default=0)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["model", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="model_version_unique_number"),
            # Promoting the same run to the same model again finds this version instead.
            models.UniqueConstraint(fields=["model", "source_run_id"], name="model_version_unique_run"),
            models.CheckConstraint(condition=Q(version__gte=1), name="model_version_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"

    def score_on(self, metric: str) -> float | None:
        """This version's value of `metric`: its held-out evaluation first, else the run's latest
        reported value (a job's metric is often a reported one, e.g. val_accuracy)."""
        for source in (self.metrics, self.run_metrics):
            value = source.get(metric) if isinstance(source, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None


class ModelAlias(models.Model):
    """A movable name (`champion`, `staging`) for one version of a model; unique within it."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.SlugField(max_length=MAX_ALIAS_NAME)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "name"]
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="model_alias_unique_name")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.name}"


class AliasChange(models.Model):
    """One move of an alias: who, when, from which version number to which (null: set or removed)."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="alias_changes")
    alias = models.CharField(max_length=MAX_ALIAS_NAME)
    from_version = models.PositiveIntegerField(null=True, blank=True)
    to_version = models.PositiveIntegerField(null=True, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    changed_at = models.DateTimeField(default=timezone.now)
    # Why (e.g. the job policy's comparison); empty for a move by hand.
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["model", "-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias}: {self.from_version} → {self.to_version}"
