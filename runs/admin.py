"""Admin for runs and evaluations. Runs change only through services, so everything is read-only
here; the one action, "cancel", goes through `run_cancel`."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import F
from django.utils.html import format_html, format_html_join

from tunix_rt.exceptions import InvalidTransition

from . import services
from .models import Evaluation, LogLine, MetricPoint, Run


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class EvaluationInline(admin.StackedInline):
    model = Evaluation
    fields = ["primary_metric", "primary_score", "metrics_table", "created_at"]
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="metrics")
    def metrics_table(self, evaluation: Evaluation):
        return _metrics_table(evaluation.metrics)


def _metrics_table(metrics: dict) -> str:
    if not metrics:
        return "—"
    rows = format_html_join(
        "", "<tr><th>{}</th><td>{}</td></tr>", ((name, f"{value:.6g}") for name, value in metrics.items())
    )
    return format_html("<table>{}</table>", rows)


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "name", "owner", "trainer", "dataset", "status", "primary_score", "duration", "created_at"]
    list_display_links = ["id", "name"]
    list_filter = ["status", "trainer", "dataset", "created_at"]
    search_fields = ["=id", "name", "trainer", "dataset", "owner__username", "error_message"]
    list_select_related = ["owner", "evaluation"]
    date_hierarchy = "created_at"
    actions = ["cancel_runs"]
    inlines = [EvaluationInline]
    fieldsets = [
        (
            None,
            {"fields": ["name", "owner", "trainer", "dataset", "hyperparameters_json", "status", "cancel_requested"]},
        ),
        (
            "Progress",
            {"fields": ["last_step", "latest_metrics_json", "primary_score", "log_lines_dropped", "output_dir"]},
        ),
        ("Timing", {"fields": ["created_at", "started_at", "finished_at", "duration", "heartbeat_at", "attempts"]}),
        ("Error", {"fields": ["error_message", "error_traceback"], "classes": ["collapse"]}),
    ]
    readonly_fields = [field for _title, options in fieldsets for field in options["fields"]]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(primary_score_value=F("evaluation__primary_score"))

    @admin.display(description="primary score", ordering="primary_score_value")
    def primary_score(self, run: Run):
        score = getattr(run, "primary_score_value", None)
        return "—" if score is None else f"{score:.4g}"

    @admin.display(description="duration", ordering="finished_at")
    def duration(self, run: Run):
        duration = run.duration
        return "—" if duration is None else f"{duration.total_seconds():.1f} s"

    @admin.display(description="hyperparameters")
    def hyperparameters_json(self, run: Run):
        return format_html("<pre>{}</pre>", json.dumps(run.hyperparameters, indent=2, sort_keys=True))

    @admin.display(description="latest metrics")
    def latest_metrics_json(self, run: Run):
        return _metrics_table(run.latest_metrics)

    @admin.action(description="Cancel the selected runs")
    def cancel_runs(self, request, queryset):
        cancelled, ended = 0, []
        for run in queryset:
            try:
                services.run_cancel(run=run)
                cancelled += 1
            except InvalidTransition:
                ended.append(str(run.pk))
        if cancelled:
            self.message_user(request, f"Cancelled or asked to stop {cancelled} run(s).", messages.SUCCESS)
        if ended:
            self.message_user(request, f"Already ended, not cancelled: run(s) {', '.join(ended)}.", messages.WARNING)

    def delete_model(self, request, obj: Run) -> None:
        services.run_delete_outputs(run=obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for run in queryset:
            services.run_delete_outputs(run=run)
        super().delete_queryset(request, queryset)


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdmin):
    list_display = ["run", "primary_metric", "primary_score", "trainer", "dataset", "created_at"]
    list_filter = ["primary_metric", "run__trainer", "run__dataset"]
    search_fields = ["=run__id", "run__name", "run__trainer", "primary_metric"]
    list_select_related = ["run"]
    fields = ["run", "primary_metric", "primary_score", "metrics_table", "details", "created_at"]
    readonly_fields = fields

    @admin.display(ordering="run__trainer")
    def trainer(self, evaluation: Evaluation) -> str:
        return evaluation.run.trainer

    @admin.display(ordering="run__dataset")
    def dataset(self, evaluation: Evaluation) -> str:
        return evaluation.run.dataset

    @admin.display(description="metrics")
    def metrics_table(self, evaluation: Evaluation):
        return _metrics_table(evaluation.metrics)


@admin.register(MetricPoint)
class MetricPointAdmin(ReadOnlyAdmin):
    list_display = ["run", "step", "values", "recorded_at"]
    search_fields = ["=run__id"]
    list_select_related = ["run"]
    show_full_result_count = False


@admin.register(LogLine)
class LogLineAdmin(ReadOnlyAdmin):
    list_display = ["run", "seq", "stream", "text", "created_at"]
    list_filter = ["stream"]
    search_fields = ["=run__id", "text"]
    list_select_related = ["run"]
    show_full_result_count = False
