"""End to end in real headless Chromium: the form creates a job, Start runs it on the real Celery
worker with real Ray Tune trials, and the page follows it live without reloading; cancel; field
errors. Screenshots of the job page running and finished go to test-artifacts/."""

from __future__ import annotations

import re

import pytest

from runs.models import Run
from tests.browser import screenshot
from tuning.models import Trial, TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

JOB_URL = re.compile(r".*/jobs/(\d+)/$")


def fill_new_job_form(page, *, name: str, trials: int, epochs: int, delay_s: float, concurrency: int = 1) -> None:
    page.goto("/jobs/new/")
    # Picking the trainer swaps its datasets and hyperparameters into the form (htmx).
    page.select_option("select[name=trainer]", "sklearn-mlp")
    page.wait_for_selector("select[name=dataset] option[value=iris]", state="attached")
    page.wait_for_selector("input[name='hp.epoch_delay_s.value']", state="attached")
    page.select_option("select[name=dataset]", "iris")
    page.fill("input[name=name]", name)
    page.fill("input[name=num_samples]", str(trials))
    page.fill("input[name=max_concurrent_trials]", str(concurrency))
    page.fill("input[name='hp.epochs.value']", str(epochs))
    page.fill("input[name='hp.epoch_delay_s.value']", str(delay_s))
    page.fill("input[name=seed]", "11")


def job_id(page) -> int:
    return int(JOB_URL.match(page.url).group(1))


def test_create_start_and_watch_a_job_to_its_best_run(celery_worker, signed_in_page):
    page = signed_in_page
    fill_new_job_form(page, name="iris e2e", trials=3, epochs=8, delay_s=0.4)
    page.click("button[name=action][value=start]")
    page.wait_for_url(JOB_URL)
    page.evaluate("window.__notReloaded = true")
    job = TuningJob.objects.get(pk=job_id(page))
    assert job.search_space["learning_rate"]["type"] == "loguniform"

    # A trial row appears running, then the same row turns succeeded: all without a reload.
    row = page.wait_for_selector("#trial-table tbody tr[data-status=running]", timeout=120_000)
    row_id = row.get_attribute("id")
    page.wait_for_selector("#job-charts [data-chart=curves] canvas", timeout=30_000)
    screenshot(page, "e2e-job-running")
    page.wait_for_selector(f"#{row_id}[data-status=succeeded]", timeout=60_000)

    page.wait_for_selector("#job-live[data-status=succeeded]", timeout=180_000)
    assert page.evaluate("window.__notReloaded") is True
    assert page.locator("#trial-table tbody tr[data-status=succeeded]").count() == 3
    assert page.locator("#job-live").get_attribute("hx-trigger") is None

    job.refresh_from_db()
    best = Trial.objects.best(job.mode).filter(job=job).first()
    best_link = page.locator("#best-run a[href^='/runs/']")
    assert best_link.get_attribute("href") == f"/runs/{best.run_id}/"
    assert page.locator("#best-run .value").inner_text() == f"{best.best_metric_value:.4g}"
    page.wait_for_selector("#job-charts[data-status=succeeded] [data-chart=hyperparameters] canvas", timeout=30_000)
    screenshot(page, "e2e-job-finished")

    best_link.click()
    page.wait_for_url(f"**/runs/{best.run_id}/")
    assert page.locator("#evaluation .stat").count() >= 1
    assert "evaluation:" in page.locator("#logs").inner_text()
    assert page.locator(f"a[href='/jobs/{job.pk}/']").count() >= 1


def test_cancel_a_running_job_from_its_page(celery_worker, signed_in_page):
    page = signed_in_page
    fill_new_job_form(page, name="to cancel", trials=4, epochs=60, delay_s=0.5)
    page.click("button[name=action][value=start]")
    page.wait_for_url(JOB_URL)
    job_pk = job_id(page)
    page.wait_for_selector("#trial-table tbody tr[data-status=running]", timeout=120_000)

    page.click("#job-live button:has-text('Cancel')")
    page.wait_for_selector("text=Cancellation requested")
    page.wait_for_selector("#job-live[data-status=cancelled]", timeout=60_000)
    assert page.locator("#trial-table tbody tr[data-status=running]").count() == 0
    assert page.locator("#job-live button:has-text('Cancel')").count() == 0
    assert not Run.objects.filter(trial__job_id=job_pk, status__in=Run.ACTIVE_STATUSES).exists()


def test_a_bad_search_space_shows_errors_next_to_the_field(signed_in_page):
    page = signed_in_page
    # The form page answers 400 with its errors, which Chromium reports on the console.
    page.watch.expect_console_error("the server responded with a status of 400")
    fill_new_job_form(page, name="bad", trials=3, epochs=2, delay_s=0)
    page.fill("input[name='hp.learning_rate.low']", "-1")
    page.fill("input[name='hp.batch_size.values']", "16, big")
    page.click("button[name=action][value=save]")
    error = page.wait_for_selector("#hp-batch_size .errorlist")
    assert "'big' is not a number" in error.inner_text()
    assert page.locator("#form-errors").is_visible()
    assert page.locator("input[name='hp.learning_rate.low']").input_value() == "-1"

    page.fill("input[name='hp.batch_size.values']", "16, 32")
    page.click("button[name=action][value=save]")
    error = page.wait_for_selector("#hp-learning_rate .errorlist")
    assert error.is_visible() and error.inner_text().strip()
    assert not TuningJob.objects.exists()
    screenshot(page, "form-errors")
