"""Runs API serializers: input serializers validate request data, output serializers render."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from runs.models import Evaluation, Run
from runs.services import MAX_NAME_LENGTH
from tunix_rt.serializers import StrictSerializer

# --- input ----------------------------------------------------------------------------------------


class RunCreateSerializer(StrictSerializer):
    """A run to create. Hyperparameters left out take the trainer's defaults; unknown fields and
    unknown hyperparameters are refused, never ignored."""

    name = serializers.CharField(max_length=MAX_NAME_LENGTH, required=False, allow_blank=True, default="")
    trainer = serializers.CharField(max_length=100, help_text="A trainer name from /api/trainers/.")
    dataset = serializers.CharField(max_length=200, help_text="One of the trainer's datasets.")
    hyperparameters = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        default=dict,
        help_text="name: value, checked against the trainer's hyperparameter schema.",
    )


class LogQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(
        required=False, min_value=0, help_text="Only lines after this `seq` (live tailing: pass `next_after`)."
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.TUNIX_RT["LOG_MAX_LINES"],
        default=min(1000, settings.TUNIX_RT["LOG_MAX_LINES"]),
        help_text="At most this many lines (the newest ones without `after`).",
    )


class MetricQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(required=False, help_text="Only steps after this one (live charts).")


# --- output ---------------------------------------------------------------------------------------


class EvaluationSerializer(serializers.ModelSerializer):
    metrics = serializers.DictField(child=serializers.FloatField(), help_text="Held-out metrics.")
    details = serializers.ListField(
        child=serializers.DictField(), help_text="Per-item detail, e.g. predictions (trainer-specific)."
    )

    class Meta:
        model = Evaluation
        fields = ["metrics", "primary_metric", "primary_score", "details", "created_at"]


class RunSerializer(serializers.ModelSerializer):
    """A run as lists show it."""

    url = serializers.HyperlinkedIdentityField(view_name="run-detail")
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    duration_s = serializers.SerializerMethodField(help_text="Seconds from start to end (or to now while running).")
    primary_metric = serializers.CharField(source="evaluation.primary_metric", read_only=True, allow_null=True)
    primary_score = serializers.FloatField(source="evaluation.primary_score", read_only=True, allow_null=True)
    hyperparameters = serializers.DictField(child=serializers.JSONField(), read_only=True)
    latest_metrics = serializers.DictField(
        child=serializers.FloatField(), read_only=True, help_text="The latest value of every reported metric."
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "url",
            "name",
            "owner",
            "trainer",
            "dataset",
            "hyperparameters",
            "status",
            "cancel_requested",
            "latest_metrics",
            "last_step",
            "primary_metric",
            "primary_score",
            "error_message",
            "created_at",
            "started_at",
            "finished_at",
            "duration_s",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_duration_s(self, run: Run) -> float | None:
        duration = run.duration
        return None if duration is None else round(duration.total_seconds(), 3)


class RunDetailSerializer(RunSerializer):
    """A run with its evaluation, error detail and the links to its metrics, logs and artifacts."""

    evaluation = EvaluationSerializer(read_only=True, allow_null=True)
    links = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = [
            *RunSerializer.Meta.fields,
            "evaluation",
            "error_traceback",
            "attempts",
            "log_lines_dropped",
            "heartbeat_at",
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                name: {"type": "string", "format": "uri"} for name in ("metrics", "logs", "artifacts", "cancel")
            },
        }
    )
    def get_links(self, run: Run) -> dict[str, str]:
        request = self.context.get("request")
        return {
            name: reverse(f"run-{name}", args=[run.pk], request=request)
            for name in ("metrics", "logs", "artifacts", "cancel")
        }


class MetricSeriesSerializer(serializers.Serializer):
    steps = serializers.ListField(child=serializers.IntegerField())
    series = serializers.DictField(
        child=serializers.ListField(child=serializers.FloatField(allow_null=True)),
        help_text="Per metric, one value per entry of `steps` (null where that step did not report it).",
    )


class LogLineSerializer(serializers.Serializer):
    seq = serializers.IntegerField(help_text="The line's number in the run's whole output.")
    stream = serializers.ChoiceField(choices=["stdout", "stderr", "system"])
    text = serializers.CharField()
    created_at = serializers.DateTimeField()


class LogPageSerializer(serializers.Serializer):
    lines = LogLineSerializer(many=True)
    next_after = serializers.IntegerField(help_text="Pass as `after` to get only newer lines.")
    has_more = serializers.BooleanField(help_text="More lines are already stored after this page.")
    omitted = serializers.IntegerField(
        help_text="Lines between `after` (or the start) and the first line returned that this page leaves out."
    )
    dropped = serializers.IntegerField(help_text="Lines discarded so far by the per-run limit, oldest first.")
    status = serializers.ChoiceField(
        choices=Run.Status.choices, help_text="The run's status: stop tailing once terminal."
    )


class ArtifactSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="Relative to the run's output folder.")
    size = serializers.IntegerField(help_text="Bytes.")
    modified_at = serializers.DateTimeField()
    url = serializers.URLField(help_text="Download link.")


class ArtifactListSerializer(serializers.Serializer):
    files = ArtifactSerializer(many=True)
    truncated = serializers.BooleanField(help_text="The folder holds more files than are listed.")


class HyperParameterSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=["float", "int", "str", "bool"])
    default = serializers.JSONField()
    description = serializers.CharField()
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)
    choices = serializers.ListField(child=serializers.JSONField(), allow_null=True)
    log = serializers.BooleanField(help_text="Sample on a log scale.")


class TrainerSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    datasets = serializers.ListField(child=serializers.CharField())
    default_metric = serializers.CharField()
    default_mode = serializers.ChoiceField(choices=["max", "min"])
    metrics = serializers.ListField(child=serializers.CharField(), help_text="Metrics reported every step.")
    hyperparameters = HyperParameterSerializer(many=True)
