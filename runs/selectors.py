"""Reads of runs shared by the API and the pages: metric series, log pages, artifacts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db.models import Count, ExpressionWrapper, F, FloatField, IntegerField, Max, Min, Q, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from .models import LogLine, MetricPoint, Run

MAX_ARTIFACTS_LISTED = 1000
CURVE_MAX_POINTS = 2000


def runs_for_list(*, user) -> QuerySet[Run]:
    """The runs `user` may see, with what a list shows (owner, evaluation) in the same query."""
    return (
        Run.objects.visible_to(user)
        .select_related("owner", "evaluation")
        .annotate(primary_score=F("evaluation__primary_score"))
    )


def run_metric_charts(*, run: Run) -> dict:
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


def run_metric_best(*, run_id: int, metric: str, mode: str) -> float | None:
    """The best value of `metric` over every step the run stored (max or min), in SQL."""
    value = Cast(KT(f"values__{metric}"), FloatField())
    best = Max(value) if mode == "max" else Min(value)
    return MetricPoint.objects.filter(run_id=run_id, **{f"values__{metric}__isnull": False}).aggregate(v=best)["v"]


def run_metrics_latest(*, run_id: int) -> tuple[int, dict[str, float]] | None:
    """The run's last stored step and its metrics; None before its first report."""
    return MetricPoint.objects.filter(run_id=run_id).order_by("-step").values_list("step", "values").first()


def run_metric_series(*, run: Run, after_step: int | None = None) -> dict[str, Any]:
    """The run's metrics as columns: `steps`, and per metric one value per step (None where a step
    did not report that metric). Reads plain rows, no model instances: cheap for many points."""
    rows = MetricPoint.objects.filter(run=run).order_by("step").values_list("step", "values")
    if after_step is not None:
        rows = rows.filter(step__gt=after_step)
    steps: list[int] = []
    series: dict[str, list[float | None]] = {}
    for index, (step, values) in enumerate(rows):
        steps.append(step)
        for name, value in values.items():
            column = series.get(name)
            if column is None:
                column = series[name] = [None] * index
            column.append(value)
        for column in series.values():
            if len(column) == index:
                column.append(None)
    return {"steps": steps, "series": series}


@dataclass
class LogPage:
    lines: list[dict[str, Any]]
    # Pass back as `after` to get only newer lines.
    next_after: int
    # More lines are stored after this page (with `after`, when `limit` cut it).
    has_more: bool
    # Lines between `after` (or the start) and the first returned line that this page leaves out:
    # older lines beyond the tail, or lines dropped by the per-run limit before they were read.
    omitted: int
    # Lines the per-run limit (LOG_MAX_LINES) has discarded so far, oldest first.
    dropped: int


def run_log_page(*, run: Run, after: int | None = None, limit: int = 1000) -> LogPage:
    """Without `after`: the newest `limit` lines. With it: up to `limit` lines after that `seq`.
    A line's `seq` is its number in the run's whole output (services.run_logs_append)."""
    lines = LogLine.objects.filter(run=run).values("seq", "stream", "text", "created_at")
    if after is None:
        page = list(lines.order_by("-seq")[:limit])[::-1]
        has_more, start = False, 0
    else:
        page = list(lines.filter(seq__gt=after).order_by("seq")[: limit + 1])
        has_more, start = len(page) > limit, after
        page = page[:limit]
    return LogPage(
        lines=page,
        next_after=page[-1]["seq"] if page else (after or 0),
        has_more=has_more,
        omitted=page[0]["seq"] - start - 1 if page else 0,
        dropped=run.log_lines_dropped,
    )


def run_artifacts(*, run: Run) -> tuple[list[dict[str, Any]], bool]:
    """Regular files in the run's output folder (symbolic links are not followed) with their
    sizes, sorted by path, the first MAX_ARTIFACTS_LISTED found; and whether the list was cut."""
    root = Path(run.output_dir) if run.output_dir else None
    if root is None or not root.is_dir():
        return [], False
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            stat = path.lstat()
            if not path.is_symlink() and path.is_file():
                files.append(
                    {
                        "path": path.relative_to(root).as_posix(),
                        "size": stat.st_size,
                        "modified_at": datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                    }
                )
                if len(files) > MAX_ARTIFACTS_LISTED:
                    return sorted(files[:MAX_ARTIFACTS_LISTED], key=lambda f: f["path"]), True
    return sorted(files, key=lambda f: f["path"]), False


def run_artifact_file(*, run: Run, path: str) -> Path | None:
    """The file at `path` inside the run's output folder, or None: nothing outside the folder is
    ever returned (`..`, absolute paths and symbolic links that lead out are refused)."""
    if not run.output_dir or not path or "\x00" in path:
        return None
    root = Path(run.output_dir).resolve()
    candidate = (root / path).resolve()
    if candidate == root or not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate
