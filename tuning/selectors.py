"""Reads shared by the API and the pages: progress counts, trial tables, chart series.

Every function here costs a fixed number of queries, whatever the number of jobs or trials.
"""

from __future__ import annotations

import datetime
import math
from collections import defaultdict
from typing import Any

from django.db.models import Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from runs.models import MetricPoint
from tunix_rt.exceptions import ValidationError

from .models import Trial, TuningJob

PROGRESS_FIELDS = ("total", "done", "succeeded", "failed", "stopped", "cancelled", "running", "pending")

# Sort keys accepted by `trials_for_job` (prefix "-" for descending). "metric" sorts by the trial's
# best value of the job's metric, best first for "metric" whatever the job's mode.
TRIAL_ORDERINGS = {
    "number": "number",
    "status": "status",
    "iterations": "iterations",
    "best_metric_value": "best_metric_value",
    "latest_metric_value": "latest_metric_value",
    "created_at": "created_at",
    "started_at": "started_at",
    "finished_at": "finished_at",
}


def _trial_count(statuses: tuple[str, ...] | None = None) -> Coalesce:
    trials = Trial.objects.filter(job=OuterRef("pk"))
    if statuses is not None:
        trials = trials.filter(status__in=statuses)
    counted = trials.order_by().values("job").annotate(n=Count("id")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def tuning_jobs_with_progress(queryset: QuerySet[TuningJob]) -> QuerySet[TuningJob]:
    """Jobs annotated with `trials_<status>` counts (and `trials_total`, `trials_done`) and with
    their best run and its evaluation joined: one query for a page of jobs."""
    # One correlated COUNT per status, each read from the (job, status) index. A JOIN + GROUP BY
    # made SQLite sort a 10,000-trial job's rows with every selected column (~180 ms per job).
    status = Trial.Status
    return queryset.select_related("owner", "cancelled_by", "best_run", "best_run__evaluation").annotate(
        trials_total=_trial_count(),
        trials_done=_trial_count(tuple(Trial.TERMINAL_STATUSES)),
        trials_succeeded=_trial_count((status.SUCCEEDED,)),
        trials_failed=_trial_count((status.FAILED,)),
        trials_stopped=_trial_count((status.STOPPED,)),
        trials_cancelled=_trial_count((status.CANCELLED,)),
        trials_running=_trial_count((status.RUNNING,)),
        trials_pending=_trial_count((status.PENDING,)),
    )


def job_progress(job: TuningJob) -> dict[str, int]:
    """The progress counts of an annotated job as a dict (keys of PROGRESS_FIELDS)."""
    return {name: getattr(job, f"trials_{name}", 0) for name in PROGRESS_FIELDS}


def job_live_progress(job: TuningJob) -> dict[str, Any]:
    """What a job's live view shows of its progress: trial counts per status (`counts`), `done`,
    `total`, the best trial so far, the time elapsed and an estimate of the time remaining.
    Two queries, whatever the number of trials."""
    counts = Trial.objects.for_job(job).aggregate(
        total=Count("id"),
        **{status: Count("id", filter=Q(status=status)) for status in Trial.Status.values},
    )
    done = sum(counts[s] for s in Trial.TERMINAL_STATUSES)
    elapsed = job.duration
    remaining = None
    if job.is_active and elapsed is not None and done and job.num_samples > done:
        remaining = elapsed / done * (job.num_samples - done)
        if job.time_budget_s:  # the experiment ends at its time budget whatever is left
            budget_left = datetime.timedelta(seconds=job.time_budget_s) - elapsed
            remaining = min(remaining, max(datetime.timedelta(0), budget_left))
    return {
        "counts": counts,
        "done": done,
        "total": max(job.num_samples, counts["total"]),
        "best_trial": Trial.objects.best(job.mode).filter(job=job).select_related("run").first(),
        "elapsed": elapsed,
        "remaining": remaining,
    }


def trials_for_job(job: TuningJob, *, ordering: str | None = None) -> QuerySet[Trial]:
    """A job's trials with their run and evaluation joined, for tables; `ordering` is a key of
    TRIAL_ORDERINGS or "metric", optionally prefixed by "-"."""
    qs = Trial.objects.filter(job=job).select_related("run", "run__evaluation", "job__cancelled_by")
    key = (ordering or "number").strip()
    descending = key.startswith("-")
    name = key.lstrip("-")
    if name == "metric":
        best_first = (job.mode == TuningJob.Mode.MAX) != descending
        value = F("best_metric_value")
        order = value.desc(nulls_last=True) if best_first else value.asc(nulls_last=True)
        return qs.order_by(order, "number", "id")
    if name not in TRIAL_ORDERINGS:
        allowed = ", ".join(["metric", *TRIAL_ORDERINGS])
        raise ValidationError(f"unknown ordering {key!r}; use one of {allowed} (prefix - to reverse)", field="ordering")
    field = F(TRIAL_ORDERINGS[name])
    if not Trial._meta.get_field(TRIAL_ORDERINGS[name]).null:
        # NULLS LAST on a column without nulls would keep PostgreSQL from reading an index backwards
        # (a 10,000-trial job sorted newest first: 18 ms instead of 0.1 ms).
        return qs.order_by(field.desc() if descending else field.asc(), "number", "id")
    return qs.order_by(field.desc(nulls_last=True) if descending else field.asc(nulls_last=True), "number", "id")


def best_so_far_series(job: TuningJob) -> list[dict[str, Any]]:
    """For each trial in number order: its value and the best value of any succeeded trial up to
    it (null until one succeeded). One query."""
    maximise = job.mode == TuningJob.Mode.MAX
    rows = Trial.objects.filter(job=job).order_by("number", "id").values_list("number", "status", "best_metric_value")
    series = []
    best: float | None = None
    for number, status, value in rows:
        if status == Trial.Status.SUCCEEDED and value is not None and math.isfinite(value):
            if best is None or (value > best if maximise else value < best):
                best = value
        series.append({"trial": number, "value": value, "status": status, "best_so_far": best})
    return series


def learning_curves(job: TuningJob, *, metric: str | None = None) -> dict[int, list[tuple[int, float]]]:
    """Per trial number, the (step, value) points of `metric` (the job's metric by default) of
    the trial's run. One query."""
    metric = metric or job.metric
    curves: dict[int, list[tuple[int, float]]] = defaultdict(list)
    points = (
        MetricPoint.objects.filter(run__trial__job=job)
        .order_by("run__trial__number", "step")
        .values_list("run__trial__number", "step", "values")
    )
    for number, step, values in points:
        value = values.get(metric)
        if isinstance(value, (int, float)):
            curves[number].append((step, float(value)))
    return dict(curves)
