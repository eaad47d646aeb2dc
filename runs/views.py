"""Run pages: the list of runs and a run's detail with metric curves, evaluation and a live log tail."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, ExpressionWrapper, F, IntegerField, Max, Min, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from tunix_rt.htmx import wants_fragment

from .models import Run

RUNS_PER_PAGE = 25
LOG_TAIL_LINES = 200
CURVE_MAX_POINTS = 2000
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


def _metric_curves(run: Run) -> dict:
    """Every reported metric against the step, at most CURVE_MAX_POINTS points (evenly thinned)."""
    points = run.metric_points.all()
    span = points.aggregate(n=Count("id"), first=Min("step"), last=Max("step"))
    if span["n"] > CURVE_MAX_POINTS:
        # Thin in the database (every k-th step, and the last one) rather than reading up to
        # METRIC_MAX_POINTS rows to draw 2,000.
        stride = -(-(span["last"] - span["first"] + 1) // CURVE_MAX_POINTS)
        offset = ExpressionWrapper((F("step") - span["first"]) % stride, output_field=IntegerField())
        points = points.annotate(offset=offset).filter(Q(offset=0) | Q(step=span["last"]))
    rows = list(points.order_by("step").values_list("step", "values"))
    names: list[str] = []
    for _, values in rows:
        for name in values if isinstance(values, dict) else ():
            if name not in names:
                names.append(name)
    x = [step for step, _ in rows]
    series = [
        {"label": name, "values": [v.get(name) if isinstance(v, dict) else None for _, v in rows]} for name in names
    ]
    # Losses and scores live on different scales: one chart per family keeps both readable.
    loss = [s for s in series if "loss" in s["label"]]
    other = [s for s in series if "loss" not in s["label"]]
    charts = {}
    if loss:
        charts["loss"] = {"kind": "lines", "xInteger": True, "xLabel": "step", "yLabel": "loss", "x": x, "series": loss}
    if other:
        charts["scores"] = {
            "kind": "lines",
            "xInteger": True,
            "xLabel": "step",
            "yLabel": "value",
            "x": x,
            "series": other,
        }
    return charts


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
        "charts": _metric_curves(run),
        "details": details,
        "details_total": len(evaluation.details) if evaluation and isinstance(evaluation.details, list) else 0,
        "detail_columns": detail_columns,
        "poll_interval": POLL_INTERVAL,
        "log_max_lines": settings.TUNIX_RT["LOG_MAX_LINES"],
    }
    template = "runs/run_detail.html#run-live" if wants_fragment(request) else "runs/run_detail.html"
    return render(request, template, context)
