"""Reads shared by the tuning pages and API.

STAND-IN on branch `ui`: the tuning engine (branch `tuning`) owns this module and implements the
agreed functions; this minimal version lets the pages be built first and is replaced on merge.
"""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from .models import Trial, TuningJob


def tuning_jobs_with_progress(queryset: QuerySet[TuningJob]) -> QuerySet[TuningJob]:
    """Annotate each job with its trial counts per status (one query for a page of jobs)."""
    counts = {
        f"trials_{status}": Count("trials", filter=Q(trials__status=status)) for status in Trial.Status.values
    }
    return queryset.annotate(trials_total=Count("trials"), **counts)


def trials_for_job(job: TuningJob, *, ordering: list[str] | tuple[str, ...] = ("number",)) -> QuerySet[Trial]:
    return Trial.objects.for_job(job).select_related("run").order_by(*ordering, "id")


def best_so_far_series(job: TuningJob) -> list[dict]:
    """Finished trials with a metric value in completion order, with the best value so far."""
    rows = (
        Trial.objects.for_job(job)
        .filter(best_metric_value__isnull=False, finished_at__isnull=False)
        .order_by("finished_at", "id")
        .values_list("number", "best_metric_value")
    )
    series, best = [], None
    better = max if job.mode == TuningJob.Mode.MAX else min
    for number, value in rows:
        best = value if best is None else better(best, value)
        series.append({"trial": number, "value": value, "best": best})
    return series
