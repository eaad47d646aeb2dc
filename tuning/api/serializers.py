"""Input serializers validate shapes and call services; output serializers render."""

from __future__ import annotations

from rest_framework import serializers

from tuning import selectors
from tuning.config import JobConfig, Spec
from tuning.models import Trial, TuningJob
from tunix_rt.serializers import StrictSerializer


def _config_field(spec: Spec) -> serializers.Field:
    """The API field of one JobConfig field: its type and bounds, for the schema and a first check
    of shapes; `JobConfig.validate` (called by the service) has the last word."""
    options: dict = {"required": spec.required, "help_text": spec.help}
    if spec.nullable:
        options["allow_null"] = True
    if spec.kind == "str":
        return serializers.CharField(max_length=spec.max_length, **options)
    if spec.kind == "choice":
        return serializers.ChoiceField(choices=spec.choices, **options)
    if spec.kind == "object":
        return serializers.JSONField(**options)
    bounds = {"min_value": spec.low, "max_value": spec.high_value()}
    if spec.kind == "int":
        return serializers.IntegerField(**bounds, **options)
    return serializers.FloatField(**options)


TuningJobCreateSerializer = type(
    "TuningJobCreateSerializer",
    (StrictSerializer,),
    {
        "__doc__": "A job to create: JobConfig's fields (tuning/config.py). Left-out fields take their defaults; "
        "metric and mode default to the trainer's.",
        "__module__": __name__,
        **{name: _config_field(spec) for name, spec in JobConfig.specs().items()},
    },
)


class RunSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    hyperparameters = serializers.JSONField()
    primary_metric = serializers.SerializerMethodField()
    primary_score = serializers.SerializerMethodField()

    def _evaluation(self, run):
        return getattr(run, "evaluation", None)

    def get_primary_metric(self, run) -> str | None:
        evaluation = self._evaluation(run)
        return evaluation.primary_metric if evaluation else None

    def get_primary_score(self, run) -> float | None:
        evaluation = self._evaluation(run)
        return evaluation.primary_score if evaluation else None


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    done = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    stopped = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    running = serializers.IntegerField()
    pending = serializers.IntegerField()


class TuningJobSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    cancelled_by = serializers.CharField(source="cancelled_by.get_username", read_only=True, allow_null=True)
    best_run = RunSummarySerializer(read_only=True, allow_null=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = TuningJob
        fields = [
            "id", "name", "owner", "trainer", "dataset", "search_space", "fixed_hyperparameters", "metric", "mode",
            "num_samples", "max_concurrent_trials", "search_algorithm", "scheduler", "time_budget_s",
            "cpus_per_trial", "gpus_per_trial", "seed", "max_failed_trials", "max_trial_retries",
            "promote_to", "promotion_note", "status", "cancel_requested", "cancelled_by", "attempts",
            "error_message", "best_run", "best_hyperparameters", "best_metric_value", "progress", "experiment_path",
            "created_at", "queued_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_progress(self, job) -> ProgressSerializer:
        return selectors.job_progress(job)


class TrialSerializer(serializers.ModelSerializer):
    run = RunSummarySerializer(read_only=True, allow_null=True)
    end_description = serializers.CharField(read_only=True, help_text="Why the trial ended, in words.")

    class Meta:
        model = Trial
        fields = [
            "id", "number", "ray_trial_id", "status", "hyperparameters", "latest_metric_value", "best_metric_value",
            "iterations", "end_reason", "end_description", "error_message", "run", "node", "created_at",
            "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields
