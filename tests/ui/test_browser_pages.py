"""Pages in real headless Chromium over data written by the test: live rows without reloading,
polling that stops by itself, charts drawn, sign-in, phone layout. The end-to-end tests with the
real tuning engine are in test_browser_tuning.py."""

from __future__ import annotations

import datetime
import time
from urllib.parse import unquote

import pytest
from django.utils import timezone

from runs.models import MetricPoint, Run
from tests.browser import screenshot
from tests.ui.data import job_with_trials, run_with_logs
from tuning.models import Trial, TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_sign_in_through_the_form_and_sign_out(anonymous_page, browser_user):
    page = anonymous_page
    page.goto("/runs/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", browser_user.username)
    page.fill("input[name=password]", "pass-word-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/runs/")
    assert page.locator("h1").inner_text() == "Runs"
    page.click("text=Sign out")
    page.wait_for_url("**/accounts/login/")


def test_progress_bar_draws_stopped_trials_in_their_own_colour_with_a_legend(signed_in_page, browser_user):
    page = signed_in_page
    job = job_with_trials(browser_user, 4, running=0, status=TuningJob.Status.SUCCEEDED, name="asha sweep")
    Trial.objects.filter(job=job, number__in=[1, 2]).update(
        status=Trial.Status.STOPPED, end_reason=Trial.EndReason.STOPPED_EARLY, iterations=1
    )
    page.goto(f"/jobs/{job.pk}/")
    colour = "background-color"
    stopped = page.locator(".progress-bar.bar-stopped").first
    assert stopped.evaluate("e => e.getBoundingClientRect().width") > 0
    stopped_colour = stopped.evaluate(f"e => getComputedStyle(e).getPropertyValue('{colour}')")
    failed_colour = page.locator(".progress-bar.bar-failed").first.evaluate(
        f"e => getComputedStyle(e).getPropertyValue('{colour}')"
    )
    succeeded_colour = page.locator(".progress-bar").first.evaluate(
        f"e => getComputedStyle(e).getPropertyValue('{colour}')"
    )
    assert len({stopped_colour, failed_colour, succeeded_colour}) == 3
    legend = page.locator(".progress-legend")
    assert "2 stopped early" in legend.inner_text() and "2 succeeded" in legend.inner_text()
    swatch = legend.locator(".swatch-stopped").evaluate(f"e => getComputedStyle(e).getPropertyValue('{colour}')")
    assert swatch == stopped_colour
    assert page.locator("#trial-1 .end-reason").inner_text() == "Stopped early at step 1"
    screenshot(page, "job-progress-legend")


def test_trial_rows_appear_and_change_status_without_reloading(signed_in_page, browser_user):
    page = signed_in_page
    job = job_with_trials(browser_user, 3, running=1, name="live sweep")
    page.goto(f"/jobs/{job.pk}/")
    page.evaluate("window.__notReloaded = true")
    assert page.locator("#trial-3").get_attribute("data-status") == "running"
    page.wait_for_selector("#job-charts [data-chart=best] canvas")

    # The engine's writes, as the tuning callbacks make them: trial 3 finishes, trial 4 starts.
    now = timezone.now()
    Trial.objects.filter(job=job, number=3).update(
        status=Trial.Status.SUCCEEDED, finished_at=now, best_metric_value=0.99
    )
    Run.objects.filter(trial__job=job, trial__number=3).update(status=Run.Status.SUCCEEDED, finished_at=now)
    run = Run.objects.create(
        owner=browser_user, trainer="sklearn-mlp", dataset="digits", status=Run.Status.RUNNING, started_at=now
    )
    MetricPoint.objects.create(run=run, step=1, values={"val_accuracy": 0.4})
    Trial.objects.create(
        job=job,
        ray_trial_id="t-new",
        number=4,
        status=Trial.Status.RUNNING,
        run=run,
        hyperparameters={"learning_rate": 0.01, "batch_size": 32},
        started_at=now,
        iterations=1,
    )
    TuningJob.objects.filter(pk=job.pk).update(num_samples=4)

    page.wait_for_selector("#trial-4[data-status=running]", timeout=10_000)
    page.wait_for_selector("#trial-3[data-status=succeeded]")
    assert page.locator("#best-run .value").inner_text() == "0.99"
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "job-running")

    Trial.objects.filter(pk=Trial.objects.get(job=job, number=4).pk).update(
        status=Trial.Status.SUCCEEDED, finished_at=timezone.now(), best_metric_value=0.5
    )
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, finished_at=timezone.now())
    TuningJob.objects.filter(pk=job.pk).update(status=TuningJob.Status.SUCCEEDED, finished_at=timezone.now())
    page.wait_for_selector("#job-live[data-status=succeeded]", timeout=10_000)
    page.wait_for_selector("#job-charts[data-status=succeeded]", timeout=15_000)
    assert page.locator("#job-live").get_attribute("hx-trigger") is None  # polling stopped by itself
    assert page.locator("#job-charts").get_attribute("hx-trigger") is None
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    time.sleep(5)
    assert requests == [], requests
    assert page.evaluate("window.__notReloaded") is True


def test_job_list_rows_update_live_and_polling_stops(signed_in_page, browser_user):
    page = signed_in_page
    job = job_with_trials(browser_user, 4, running=2, name="listed sweep")
    page.goto("/")
    page.evaluate("window.__notReloaded = true")
    assert page.locator(f"#job-{job.pk}").get_attribute("data-status") == "running"
    assert page.locator("#job-table").get_attribute("hx-trigger") == "every 2s"

    now = timezone.now()
    Trial.objects.filter(job=job, status=Trial.Status.RUNNING).update(status=Trial.Status.SUCCEEDED, finished_at=now)
    TuningJob.objects.filter(pk=job.pk).update(status=TuningJob.Status.SUCCEEDED, finished_at=now)
    page.wait_for_selector(f"#job-{job.pk}[data-status=succeeded]", timeout=10_000)
    assert "4 / 4" in page.locator(f"#job-{job.pk}").inner_text()
    assert page.locator("#job-table").get_attribute("hx-trigger") is None
    assert page.evaluate("window.__notReloaded") is True


def test_finished_job_page_draws_every_chart(signed_in_page, browser_user):
    page = signed_in_page
    job = job_with_trials(
        browser_user, 30, status=TuningJob.Status.SUCCEEDED, running=0, name="digits sweep", epochs=12
    )
    TuningJob.objects.filter(pk=job.pk).update(started_at=timezone.now() - datetime.timedelta(minutes=6))
    page.goto(f"/jobs/{job.pk}/")
    page.wait_for_selector("#job-charts [data-chart=curves] canvas")
    assert page.locator("#job-charts [data-chart=hyperparameters] canvas").count() == 2
    assert page.locator("#trial-table tbody tr").count() == 25
    page.click("#trial-table th a[data-sort=metric]")
    page.wait_for_url("**sort=metric**")
    best = Trial.objects.best(job.mode).filter(job=job).first()
    assert page.locator("#trial-table tbody tr").first.get_attribute("id") == f"trial-{best.number}"
    screenshot(page, "job-finished")


def test_a_poll_after_sign_out_shows_the_sign_in_page(signed_in_page, browser_user):
    page = signed_in_page
    job = job_with_trials(browser_user, 2, running=1, name="session ends")
    page.goto(f"/jobs/{job.pk}/")
    from django.contrib.sessions.models import Session

    Session.objects.all().delete()
    # Back to this page after signing in, not to the fragment that noticed.
    page.wait_for_url(lambda url: unquote(url).endswith(f"/accounts/login/?next=/jobs/{job.pk}/"), timeout=10_000)
    assert page.locator("input[name=password]").count() == 1


def test_run_page_tails_logs_live(signed_in_page, browser_user):
    page = signed_in_page
    run = run_with_logs(browser_user, status=Run.Status.RUNNING, lines=5)
    page.goto(f"/runs/{run.pk}/")
    assert "epoch 5: line" in page.locator("#logs").inner_text()
    from runs.services import run_logs_append

    run_logs_append(run_id=run.pk, lines=[("stdout", "epoch 6: fresh line")])
    page.wait_for_selector("#logs >> text=epoch 6: fresh line", timeout=10_000)
    page.wait_for_selector("#metrics [data-chart] canvas")
    screenshot(page, "run-running")


def test_pages_read_well_on_a_phone(browser, live_server, browser_user):
    from django.conf import settings
    from django.test import Client

    job = job_with_trials(browser_user, 8, running=2, name="phone sweep")
    client = Client()
    client.force_login(browser_user)
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=live_server.url, is_mobile=True)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live_server.url,
            }
        ]
    )
    page = context.new_page()
    page.goto("/")
    # Nothing wider than the screen: the layout reflows (wide tables scroll inside their card).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "jobs-phone")
    page.goto(f"/jobs/{job.pk}/")
    page.wait_for_selector("#job-charts [data-chart=best] canvas")
    wide = page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 391)"
        ".filter(e => !e.closest('.table-wrap')).slice(0, 5).map(e => e.tagName + '.' + e.className)"
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide
    screenshot(page, "job-phone")
    context.close()
