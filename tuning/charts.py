"""Chart data for the job page, bounded whatever the number of trials.

Each chart is a small JSON spec that `static/js/app.js` draws with uPlot: an x array and a few
series. Sizes are capped (CHART_MAX_POINTS points, CURVE_MAX_TRIALS learning curves) so that a job
with 10,000 trials costs the same handful of queries and a few tens of KB.
"""

from __future__ import annotations

import math
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Max, Sum
from django.db.models.fields.json import KT

from runs.models import MetricPoint

from .models import Trial, TuningJob
from .selectors import best_so_far_series

CHART_MAX_POINTS = 1000
CURVE_MAX_TRIALS = 10
CURVE_MAX_RUNNING = 4
SCATTER_MAX_TRIALS = 1000
CHART_CACHE_S = 600
ACTIVE_CHART_CACHE_S = 4


def _stride(items: list, limit: int) -> list:
    """At most `limit` items evenly spread, always keeping the last one."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    picked = [items[int(i * step)] for i in range(limit - 1)]
    return [*picked, items[-1]]


def _number_or_text(value: Any) -> Any:
    """A JSON value extracted as text by the database, back as a number where it is one."""
    if isinstance(value, (int, float)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in str(value) and "e" not in str(value).lower() else number


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def best_so_far_chart(job: TuningJob) -> dict:
    """The best value so far against the trial number, with each trial's own value as a point;
    an even sample of at most CHART_MAX_POINTS trials (the running best covers all of them)."""
    series = _stride(
        [p for p in best_so_far_series(job) if p["value"] is not None or p["best_so_far"] is not None], CHART_MAX_POINTS
    )
    return {
        "id": "best-so-far",
        "kind": "lines",
        "xLabel": "trial",
        "xInteger": True,
        "yLabel": job.metric,
        "x": [p["trial"] for p in series],
        "series": [
            {
                "label": f"best {job.metric} so far",
                "values": [p["best_so_far"] for p in series],
                "step": True,
                "width": 2,
            },
            {"label": "trial", "values": [_finite(p["value"]) for p in series], "points": True},
        ],
    }


def learning_curves_chart(job: TuningJob) -> dict:
    """The metric per iteration for the best trials so far and the trials running now."""
    best = list(
        Trial.objects.best(job.mode)
        .filter(job=job, run__isnull=False)
        .values_list("number", "run_id")[:CURVE_MAX_TRIALS]
    )
    running = list(
        Trial.objects.for_job(job)
        .filter(status=Trial.Status.RUNNING, run__isnull=False)
        .order_by("-number")
        .values_list("number", "run_id")[:CURVE_MAX_RUNNING]
    )
    trials = dict(best)
    for number, run_id in running:
        trials.setdefault(number, run_id)
    run_to_trial = {run_id: number for number, run_id in trials.items()}
    points: dict[int, dict[int, float | None]] = {run_id: {} for run_id in run_to_trial}
    steps: set[int] = set()
    rows = (
        MetricPoint.objects.filter(run_id__in=run_to_trial)
        .order_by("step")
        .values_list("run_id", "step", "values")[: CHART_MAX_POINTS * len(run_to_trial) or 1]
    )
    for run_id, step, values in rows:
        value = _finite(values.get(job.metric)) if isinstance(values, dict) else None
        if value is not None:
            points[run_id][step] = value
            steps.add(step)
    x = _stride(sorted(steps), CHART_MAX_POINTS)
    series = [
        {"label": f"trial {run_to_trial[run_id]}", "values": [by_step.get(s) for s in x]}
        for run_id, by_step in sorted(points.items(), key=lambda item: run_to_trial[item[0]])
        if by_step
    ]
    return {
        "id": "learning-curves",
        "kind": "lines",
        "xInteger": True,
        "xLabel": "iteration",
        "yLabel": job.metric,
        "x": x,
        "series": series,
    }


def searched_names(job: TuningJob) -> list[str]:
    """The hyperparameters the job varies (a search space may also pin some with type "fixed")."""
    space = job.search_space if isinstance(job.search_space, dict) else {}
    return sorted(name for name, spec in space.items() if not (isinstance(spec, dict) and spec.get("type") == "fixed"))


def hyperparameter_charts(job: TuningJob) -> list[dict]:
    """One scatter per searched hyperparameter: its value against the trial's metric."""
    names = searched_names(job)
    if not names:
        return []
    # Only the searched keys, extracted by the database: decoding every trial's whole JSON in
    # Python costs more than the rest of the page.
    extracted = {f"hp_{i}": KT(f"hyperparameters__{name}") for i, name in enumerate(names)}
    rows = list(
        Trial.objects.for_job(job)
        .filter(best_metric_value__isnull=False)
        .order_by("-number")
        .annotate(**extracted)
        .values_list("best_metric_value", *extracted.keys())[:SCATTER_MAX_TRIALS]
    )
    charts = []
    for i, name in enumerate(names):
        spec = job.search_space.get(name) or {}
        kind = spec.get("type") if isinstance(spec, dict) else None
        pairs = [(_number_or_text(row[i + 1]), row[0]) for row in rows if row[i + 1] is not None]
        chart: dict[str, Any] = {
            "id": f"hp-{name}",
            "kind": "scatter",
            "title": name,
            "xLabel": name,
            "yLabel": job.metric,
        }
        numeric = all(_finite(v) is not None for v, _ in pairs) and kind not in ("choice", "grid")
        if numeric:
            pairs.sort(key=lambda p: p[0])
            chart["x"] = [float(v) for v, _ in pairs]
            log_scale = kind in ("loguniform", "qloguniform") or (isinstance(spec, dict) and spec.get("log") is True)
            chart["xLog"] = log_scale and all(v > 0 for v, _ in pairs)
        else:
            labels = [str(v) for v in spec.get("values", [])] if isinstance(spec, dict) else []
            for v, _ in pairs:
                if str(v) not in labels:
                    labels.append(str(v))
            index = {label: i for i, label in enumerate(labels)}
            pairs.sort(key=lambda p: index[str(p[0])])
            chart["x"] = [index[str(v)] for v, _ in pairs]
            chart["xLabels"] = labels
        chart["series"] = [{"label": job.metric, "values": [value for _, value in pairs], "points": True}]
        charts.append(chart)
    return charts


def job_charts(job: TuningJob) -> dict:
    """All charts of a job, cached until its trials change (a finished job's charts are computed
    once; a running job's when a trial reports)."""
    version = Trial.objects.for_job(job).aggregate(
        n=Count("id"), iterations=Sum("iterations"), finished=Max("finished_at"), started=Max("started_at")
    )
    stamps = [int(v.timestamp() * 1e6) if v else 0 for v in (version["finished"], version["started"])]
    key = f"tuning:charts:{job.pk}:{job.status}:{version['n']}:{version['iterations']}:{stamps[0]}:{stamps[1]}"
    charts = cache.get(key)
    if charts is None:
        charts = {
            "best": best_so_far_chart(job),
            "curves": learning_curves_chart(job),
            "hyperparameters": hyperparameter_charts(job),
        }
        # A running job's metric points may change without touching its trials: keep that short.
        cache.set(key, charts, timeout=CHART_CACHE_S if job.is_terminal else ACTIVE_CHART_CACHE_S)
    return charts
