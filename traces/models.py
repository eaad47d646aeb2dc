from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tunix_rt.models import OwnedQuerySet


class TraceDatasetQuerySet(OwnedQuerySet):
    def shared_rows(self) -> Q:
        """Built-in datasets (no owner) are visible to every signed-in user."""
        return Q(owner__isnull=True)

    def by_reference(self, reference: str) -> TraceDataset | None:
        """The dataset a run names as `name@version`, or None."""
        name, sep, version = reference.rpartition("@")
        if not sep or not version.isdigit():
            return None
        return self.filter(name=name, version=int(version)).first()


class TraceDataset(models.Model):
    """One immutable version of a reasoning-trace dataset, split into train and held-out eval."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="trace_datasets"
    )
    name = models.SlugField(max_length=100)
    version = models.PositiveIntegerField(default=1)
    description = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64)
    eval_fraction = models.FloatField(null=True, blank=True)
    train_count = models.PositiveIntegerField()
    eval_count = models.PositiveIntegerField()
    train_items = models.JSONField(default=list)
    eval_items = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TraceDatasetQuerySet.as_manager()

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            # Names are one namespace for everyone: a run names its dataset as `name@version`.
            models.UniqueConstraint(fields=["name", "version"], name="trace_dataset_unique_name_version"),
            models.CheckConstraint(
                condition=Q(train_count__gte=1, eval_count__gte=1), name="trace_dataset_nonempty_splits"
            ),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def is_builtin(self) -> bool:
        return self.owner_id is None
