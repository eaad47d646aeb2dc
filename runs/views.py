"""Run pages: the list of runs and a run's detail with metric curves, evaluation and a live log tail."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from tunix_rt.htmx import wants_fragment

from .models import Run
from .selectors import run_metric_charts

RUNS_PER_PAGE = 25
LOG_TAIL_LINES = 200
DETAIL_MAX_ROWS = 100
POLL_INTERVAL = "2s"


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    """The user's runs, newest first, filterable by status; active rows update live."""
    status = request.GET.get("status", "")
    runs = Run.objects.visible_to(request.user).select_related("evaluation", "trial__job")
    if status in Run.Status.values:
        runs = runs.filter(status=status)
    else:
        status = ""
    page = Paginator(runs.order_by("-created_at", "-id"), RUNS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "runs": page.object_list,
        "status": status,
        "statuses": Run.Status.choices,
        "any_active": any(not run.is_terminal for run in page.object_list),
        "poll_interval": POLL_INTERVAL,
    }
    template = "runs/run_list.html#run-table" if wants_fragment(request) else "runs/run_list.html"
    return render(request, template, context)


@login_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A run: status, hyperparameters, metric curves, evaluation and its log tail (live while running)."""
    run = get_object_or_404(Run.objects.visible_to(request.user).select_related("evaluation", "trial__job"), pk=pk)
    evaluation = getattr(run, "evaluation", None)
    trial = getattr(run, "trial", None)
    lines = list(run.log_lines.order_by("-seq")[:LOG_TAIL_LINES])[::-1]
    details = evaluation.details[:DETAIL_MAX_ROWS] if evaluation and isinstance(evaluation.details, list) else []
    detail_columns: list[str] = []
    for row in details:
        for key in row if isinstance(row, dict) else ():
            if key not in detail_columns:
                detail_columns.append(key)
    context = {
        "run": run,
        "evaluation": evaluation,
        "trial": trial,
        "log_lines": lines,
        "log_total": (lines[-1].seq if lines else 0),
        "log_tail": LOG_TAIL_LINES,
        "charts": run_metric_charts(run=run),
        "details": details,
        "details_total": len(evaluation.details) if evaluation and isinstance(evaluation.details, list) else 0,
        "detail_columns": detail_columns,
        "poll_interval": POLL_INTERVAL,
        "log_max_lines": settings.TUNIX_RT["LOG_MAX_LINES"],
    }
    template = "runs/run_detail.html#run-live" if wants_fragment(request) else "runs/run_detail.html"
    return render(request, template, context)
