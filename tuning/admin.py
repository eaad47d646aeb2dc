from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from tunix_rt.exceptions import TunixRTError, ValidationError

from . import services
from .config import JobConfig
from .models import Trial, TuningJob

CONFIG_FIELDS = tuple(JobConfig.specs())


class TuningJobAdminForm(forms.ModelForm):
    """Adding a job validates it like the API does (`JobConfig.validate`); errors land on their fields."""

    class Meta:
        model = TuningJob
        fields = ("owner", *CONFIG_FIELDS)

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is not None or self.errors:
            return cleaned
        data = {name: cleaned.get(name) for name in CONFIG_FIELDS}
        try:
            self.config = JobConfig.validate(data, owner=cleaned.get("owner"))
        except ValidationError as exc:
            for name, problems in exc.as_dict().items():
                self.add_error(name if name in self.fields else None, _flatten(problems))
        return cleaned


def _flatten(problems) -> list[str]:
    if isinstance(problems, dict):
        return [f"{key}: {message}" for key, nested in problems.items() for message in _flatten(nested)]
    return [str(p) for p in problems] if isinstance(problems, (list, tuple)) else [str(problems)]


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
    form = TuningJobAdminForm
    # A job's configuration is fixed once it is created (its name aside): it describes its trials.
    STATE_FIELDS = ("status", "cancel_requested", "error_message", "best_run", "best_hyperparameters",
                    "best_metric_value", "experiment_path", "lease_owner", "lease_expires_at", "heartbeat_at",
                    "attempts", "created_at", "queued_at", "started_at", "finished_at")  # fmt: skip
    readonly_fields = STATE_FIELDS
    inlines = [TrialInline]
    actions = ["start_jobs", "cancel_jobs", "resume_jobs"]

    def get_fields(self, request, obj=None):
        return ("owner", *CONFIG_FIELDS) if obj is None else ("owner", *CONFIG_FIELDS, *self.STATE_FIELDS)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("owner", *(name for name in CONFIG_FIELDS if name != "name"), *self.STATE_FIELDS)

    def save_model(self, request, obj, form, change):
        if change:
            services.tuning_job_rename(job=obj, name=form.cleaned_data["name"])
            return
        created = services.tuning_job_create(owner=form.cleaned_data["owner"], **form.config.as_fields())
        obj.pk = created.pk
        obj.refresh_from_db()

    def _apply(self, request, queryset, service, verb: str, **extra) -> None:
        done = 0
        for job in queryset:
            try:
                service(job=job, **extra)
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
        self._apply(request, queryset, services.tuning_job_cancel, "Cancelled", by=request.user)

    @admin.action(description="Resume selected failed/cancelled jobs (rerun failed trials)")
    def resume_jobs(self, request, queryset):
        self._apply(request, queryset, services.tuning_job_resume, "Resumed")


@admin.register(Trial)
class TrialAdmin(admin.ModelAdmin):
    """Read-only, like runs: trials change only through the tuning services."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    list_display = ("__str__", "job", "number", "status", "iterations", "best_metric_value", "run")
    list_filter = ("status",)
    search_fields = ("job__name", "ray_trial_id")
    list_select_related = ("job", "run")
    raw_id_fields = ("job", "run")
