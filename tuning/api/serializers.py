"""Input serializers validate shapes and call services; output serializers render."""

from __future__ import annotations

from rest_framework import serializers

from tuning import selectors
from tuning.models import Trial, TuningJob
from tuning.search_space import limit
from tuning.services import MAX_CONCURRENT_TRIALS, MAX_NAME_LENGTH, MAX_SEED, MAX_TIME_BUDGET_S, MAX_TRIAL_RETRIES


class TuningJobCreateSerializer(serializers.Serializer):
    """A job to create. Only shapes are checked here; `tuning_job_create` validates the rest
    (trainer, dataset, search space, metric) and fills the defaults."""

    name = serializers.CharField(max_length=MAX_NAME_LENGTH)
    trainer = serializers.CharField(max_length=100)
    dataset = serializers.CharField(max_length=200)
    search_space = serializers.JSONField(help_text="Hyperparameter name → specification (docs/tuning.md).")
    fixed_hyperparameters = serializers.JSONField(required=False, help_text="Hyperparameters every trial uses.")
    metric = serializers.CharField(required=False, max_length=100, help_text="Defaults to the trainer's metric.")
    mode = serializers.ChoiceField(choices=TuningJob.Mode.choices, required=False)
    num_samples = serializers.IntegerField(required=False, min_value=1, max_value=limit("MAX_TRIALS"))
    max_concurrent_trials = serializers.IntegerField(required=False, min_value=1, max_value=MAX_CONCURRENT_TRIALS)
    search_algorithm = serializers.ChoiceField(choices=TuningJob.SearchAlgorithm.choices, required=False)
    scheduler = serializers.ChoiceField(choices=TuningJob.Scheduler.choices, required=False)
    time_budget_s = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_TIME_BUDGET_S)
    cpus_per_trial = serializers.FloatField(required=False)
    gpus_per_trial = serializers.FloatField(required=False)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_SEED)
    max_failed_trials = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    max_trial_retries = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_TRIAL_RETRIES, help_text="Retries of a failing trial (default 0)."
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


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
    best_run = RunSummarySerializer(read_only=True, allow_null=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = TuningJob
        fields = [
            "id", "name", "owner", "trainer", "dataset", "search_space", "fixed_hyperparameters", "metric", "mode",
            "num_samples", "max_concurrent_trials", "search_algorithm", "scheduler", "time_budget_s",
            "cpus_per_trial", "gpus_per_trial", "seed", "max_failed_trials", "max_trial_retries",
            "status", "cancel_requested", "attempts",
            "error_message", "best_run", "best_hyperparameters", "best_metric_value", "progress", "experiment_path",
            "created_at", "queued_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_progress(self, job) -> ProgressSerializer:
        return selectors.job_progress(job)


class TrialSerializer(serializers.ModelSerializer):
    run = RunSummarySerializer(read_only=True, allow_null=True)

    class Meta:
        model = Trial
        fields = [
            "id", "number", "ray_trial_id", "status", "hyperparameters", "latest_metric_value", "best_metric_value",
            "iterations", "error_message", "run", "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields
