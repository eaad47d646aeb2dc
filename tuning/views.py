"""Tuning pages: job list, new-job form, job detail (live), its charts, and the job actions.

Every view reads through `TuningJob.objects.visible_to(request.user)`: another user's job is a 404,
fragments included. Live fragments poll only while the job is active; the last render drops the
trigger so polling stops by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from runs.trainers.registry import all_trainers
from tunix_rt.exceptions import InvalidTransition, LimitExceeded, ServiceUnavailable, TunixRTError, ValidationError
from tunix_rt.htmx import wants_fragment

from . import services
from .charts import job_charts, searched_names
from .forms import JobForm
from .models import TuningJob
from .selectors import job_live_progress, trials_for_job, tuning_jobs_with_progress

JOBS_PER_PAGE = 25
TRIALS_PER_PAGE = 25
POLL_INTERVAL = "2s"
CHART_POLL_INTERVAL = "5s"

# Sort keys of the trial table (prefix "-" to reverse), all served by `trials_for_job`.
# "metric" is best first for the job's mode.
TRIAL_SORTS = ("number", "status", "metric", "iterations", "started_at", "finished_at")
DEFAULT_TRIAL_SORT = "-number"


def _trial_sort(sort: str) -> str:
    return sort if sort.lstrip("-") in TRIAL_SORTS else DEFAULT_TRIAL_SORT


def _visible_job(request: HttpRequest, pk: int) -> TuningJob:
    # Without tuning_jobs_with_progress's joins: a poll need not load the best run's evaluation
    # (per-item details can be large); the page counts trials in one aggregate instead.
    return get_object_or_404(TuningJob.objects.visible_to(request.user), pk=pk)


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """All tuning jobs of the user, newest first, filterable by status; active rows update live."""
    status = request.GET.get("status", "")
    jobs = TuningJob.objects.visible_to(request.user)
    if status in TuningJob.Status.values:
        jobs = jobs.filter(status=status)
    else:
        status = ""
    page = Paginator(tuning_jobs_with_progress(jobs).order_by("-created_at", "-id"), JOBS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    context = {
        "page": page,
        "jobs": page.object_list,
        "status": status,
        "statuses": TuningJob.Status.choices,
        "any_active": any(job.is_active for job in page.object_list),
        "poll_interval": POLL_INTERVAL,
    }
    template = "tuning/job_list.html#job-table" if wants_fragment(request) else "tuning/job_list.html"
    return render(request, template, context)


def _job_live_context(request: HttpRequest, job: TuningJob) -> dict:
    """What the live part of the job page shows; a fixed number of queries whatever the trial count."""
    sort = _trial_sort(request.GET.get("sort", DEFAULT_TRIAL_SORT))
    page = Paginator(trials_for_job(job, ordering=sort), TRIALS_PER_PAGE).get_page(request.GET.get("page"))
    progress = job_live_progress(job)
    query = request.GET.urlencode()
    return {
        "job": job,
        # What the live fragment polls: this page with its sort and page, also after a POST action.
        "page_path": reverse("job_detail", args=[job.pk]),
        "live_url": reverse("job_detail", args=[job.pk]) + (f"?{query}" if query else ""),
        **progress,
        "page": page,
        "trials": page.object_list,
        "sort": sort,
        "searched": searched_names(job),
        "poll_interval": POLL_INTERVAL,
        "chart_poll_interval": CHART_POLL_INTERVAL,
    }


def _render_job(request: HttpRequest, job: TuningJob, *, status: int = 200, action_error: str = "") -> HttpResponse:
    context = _job_live_context(request, job)
    context["action_error"] = action_error
    template = "tuning/job_detail.html#job-live" if wants_fragment(request) else "tuning/job_detail.html"
    return render(request, template, context, status=status)


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A job: progress, best run, live trial table; the charts load from `job_charts_fragment`."""
    return _render_job(request, _visible_job(request, pk))


@login_required
def job_charts_fragment(request: HttpRequest, pk: int) -> HttpResponse:
    """The job's charts (best so far, learning curves, hyperparameters vs metric) as a fragment."""
    job = _visible_job(request, pk)
    return render(
        request,
        "tuning/job_detail.html#job-charts",
        {"job": job, "charts": job_charts(job), "chart_poll_interval": CHART_POLL_INTERVAL},
    )


@login_required
def job_create(request: HttpRequest) -> HttpResponse:
    """The new-job form. Its rules are the API's: errors come from `tuning_job_create`."""
    trainers = all_trainers()
    if not trainers:
        return render(request, "tuning/job_form.html", {"trainers": [], "form": None})
    names = {t.name: t for t in trainers}
    source = request.POST if request.method == "POST" else request.GET
    default = names.get(settings.TUNIX_RT["DEFAULT_TRAINER"], trainers[0])
    trainer = names.get(source.get("trainer", ""), default)
    if request.method != "POST":
        form = JobForm(trainer, user=request.user)
        if source.get("dataset") in form.datasets:
            form.data.update(dataset=source["dataset"], name=f"{trainer.name} on {source['dataset']}")
        template = "tuning/job_form.html#job-form" if wants_fragment(request) else "tuning/job_form.html"
        return render(request, template, {"trainers": trainers, "form": form, **_form_choices()})
    form = JobForm(trainer, request.POST, user=request.user)
    arguments = form.service_arguments()
    if arguments is not None:
        try:
            job = services.tuning_job_create(owner=request.user, **arguments)
        except ValidationError as exc:
            form.add_service_errors(exc.as_dict())
        else:
            if request.POST.get("action") == "start":
                try:
                    services.tuning_job_start(job=job)
                except TunixRTError as exc:
                    messages.error(request, f"The job was created but could not start: {exc.message}")
                else:
                    messages.success(request, "Job created and started. Trials appear below as they are scheduled.")
            else:
                messages.success(request, "Job created. Review it and press Start when ready.")
            return redirect("job_detail", pk=job.pk)
    return render(request, "tuning/job_form.html", {"trainers": trainers, "form": form, **_form_choices()}, status=400)


def _form_choices() -> dict:
    return {
        "modes": TuningJob.Mode.choices,
        "search_algorithms": TuningJob.SearchAlgorithm.choices,
        "schedulers": TuningJob.Scheduler.choices,
    }


@dataclass(frozen=True)
class JobAction:
    """A POST action on a job page: the service it calls (with the job and the user) and what the
    user is told. A refused transition re-renders the page with the reason and its status code."""

    perform: Callable[[TuningJob, Any], TuningJob]
    message: str

    def view(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = _visible_job(request, pk)
        try:
            target = self.perform(job, request.user)
        except (InvalidTransition, LimitExceeded, ServiceUnavailable) as exc:
            job.refresh_from_db()  # its state now
            return _render_job(request, job, status=exc.status_code, action_error=exc.message)
        messages.success(request, self.message.format(name=job.name))
        return redirect("job_detail", pk=target.pk)


JOB_ACTIONS = {
    # Queue the job's experiment (409 if it is not in a startable state).
    "start": JobAction(
        lambda job, user: services.tuning_job_start(job=job),
        "Job started. Trials appear below as they are scheduled.",
    ),
    # Queued jobs end at once, running ones stop their trials shortly.
    "cancel": JobAction(
        lambda job, user: services.tuning_job_cancel(job=job, by=user),
        "Cancellation requested: running trials are being stopped.",
    ),
    # Rerun a failed or cancelled job's failed trials, keep the finished ones.
    "resume": JobAction(
        lambda job, user: services.tuning_job_resume(job=job),
        "Job resumed: failed trials run again; finished trials are kept.",
    ),
    # Copy the job's definition into a new job owned by the user (not started).
    "clone": JobAction(
        lambda job, user: services.tuning_job_clone(job=job, owner=user),
        "Cloned “{name}” as a new job. Press Start to run it.",
    ),
}


@login_required
@require_POST
def job_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Start, cancel, resume or clone the job (JOB_ACTIONS), then show the job (or its clone)."""
    return JOB_ACTIONS[action].view(request, pk)
