from __future__ import annotations

from django.contrib import admin, messages

from tunix_rt.exceptions import TunixRTError

from . import services
from .models import Trial, TuningJob


class TrialInline(admin.TabularInline):
    model = Trial
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("number", "status", "hyperparameters", "iterations", "latest_metric_value", "best_metric_value", "run",
              "error_message", "started_at", "finished_at")  # fmt: skip
    readonly_fields = fields
    ordering = ("number",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(TuningJob)
class TuningJobAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "trainer", "dataset", "status", "search_algorithm", "scheduler", "num_samples",
                    "best_metric_value", "created_at")  # fmt: skip
    list_filter = ("status", "trainer", "search_algorithm", "scheduler", "mode")
    search_fields = ("name", "owner__username", "trainer", "dataset")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    raw_id_fields = ("owner", "best_run")
    readonly_fields = ("status", "cancel_requested", "error_message", "best_run", "best_hyperparameters",
                       "best_metric_value", "experiment_path", "lease_owner", "lease_expires_at", "heartbeat_at",
                       "attempts", "queued_at", "started_at", "finished_at")  # fmt: skip
    inlines = [TrialInline]
    actions = ["start_jobs", "cancel_jobs", "resume_jobs"]

    def _apply(self, request, queryset, service, verb: str) -> None:
        done = 0
        for job in queryset:
            try:
                service(job=job)
                done += 1
            except TunixRTError as exc:
                self.message_user(request, f"{job}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} job(s).", messages.SUCCESS)

    @admin.action(description="Start selected jobs")
    def start_jobs(self, request, queryset):
        self._apply(request, queryset, services.tuning_job_start, "Started")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        self._apply(request, queryset, services.tuning_job_cancel, "Cancelled")

    @admin.action(description="Resume selected failed/cancelled jobs (rerun failed trials)")
    def resume_jobs(self, request, queryset):
        self._apply(request, queryset, services.tuning_job_resume, "Resumed")


@admin.register(Trial)
class TrialAdmin(admin.ModelAdmin):
    list_display = ("__str__", "job", "number", "status", "iterations", "best_metric_value", "run")
    list_filter = ("status",)
    search_fields = ("job__name", "ray_trial_id")
    list_select_related = ("job", "run")
    raw_id_fields = ("job", "run")
