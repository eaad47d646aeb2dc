from __future__ import annotations

import pytest
from django.urls import reverse

from runs import services
from runs.models import Run
from runs.trainers.base import EvaluationResult
from tests.factories import RunFactory


@pytest.fixture
def runs(db):
    succeeded = RunFactory(name="good one", status=Run.Status.RUNNING, hyperparameters={"learning_rate": 0.01})
    services.run_metrics_record(run_id=succeeded.pk, points=[(1, {"val_accuracy": 0.7})])
    services.run_logs_append(run_id=succeeded.pk, lines=[("stdout", "epoch 1: fine")])
    services.run_finish(
        run_id=succeeded.pk,
        result=EvaluationResult(metrics={"accuracy": 0.875, "macro_f1": 0.8}, primary_metric="accuracy"),
    )
    return {
        "succeeded": succeeded,
        "queued": RunFactory(name="waiting"),
        "running": RunFactory(name="busy", status=Run.Status.RUNNING),
        "failed": RunFactory(name="broken", status=Run.Status.FAILED, error_message="ValueError: boom"),
    }


def test_run_changelist_filters_searches_and_shows_computed_columns(admin_client, runs, django_assert_max_num_queries):
    url = reverse("admin:runs_run_changelist")

    with django_assert_max_num_queries(12):
        response = admin_client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert "0.875" in page  # primary score column
    for name in ("good one", "waiting", "busy", "broken"):
        assert name in page

    filtered = admin_client.get(url, {"status__exact": "failed"}).content.decode()
    assert "broken" in filtered and "waiting" not in filtered
    searched = admin_client.get(url, {"q": "busy"}).content.decode()
    assert "busy" in searched and "broken" not in searched
    assert admin_client.get(url, {"o": "7"}).status_code == 200  # ordered by primary score


def test_run_change_page_is_read_only_and_shows_the_evaluation(admin_client, runs):
    run = runs["succeeded"]
    response = admin_client.get(reverse("admin:runs_run_change", args=[run.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "macro_f1" in page and "0.875" in page
    assert "&quot;learning_rate&quot;: 0.01" in page
    assert 'name="_save"' not in page  # no save button: runs change through services only
    assert admin_client.get(reverse("admin:runs_run_add")).status_code == 403
    before = Run.objects.get(pk=run.pk).name
    admin_client.post(reverse("admin:runs_run_change", args=[run.pk]), {"name": "renamed"})
    assert Run.objects.get(pk=run.pk).name == before


def test_cancel_action_goes_through_the_service(admin_client, runs):
    ids = [runs[key].pk for key in ("queued", "running", "failed")]

    response = admin_client.post(
        reverse("admin:runs_run_changelist"), {"action": "cancel_runs", "_selected_action": ids}, follow=True
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "Cancelled or asked to stop 2 run(s)." in page
    assert f"Already ended, not cancelled: run(s) {runs['failed'].pk}." in page
    assert Run.objects.get(pk=runs["queued"].pk).status == Run.Status.CANCELLED
    assert Run.objects.get(pk=runs["running"].pk).cancel_requested
    assert Run.objects.get(pk=runs["failed"].pk).status == Run.Status.FAILED


@pytest.mark.parametrize("model", ["evaluation", "metricpoint", "logline"])
def test_evaluations_metric_points_and_log_lines_are_listed_read_only(admin_client, runs, model):
    changelist = admin_client.get(reverse(f"admin:runs_{model}_changelist"))
    assert changelist.status_code == 200
    assert admin_client.get(reverse(f"admin:runs_{model}_add")).status_code == 403
    from django.apps import apps

    obj = apps.get_model("runs", model).objects.first()
    page = admin_client.get(reverse(f"admin:runs_{model}_change", args=[obj.pk])).content.decode()
    assert 'name="_save"' not in page
