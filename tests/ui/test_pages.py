"""Pages over factory-made data: login, owner scoping, live fragments that stop polling, cost."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Run
from tests.factories import RunFactory, TrialFactory, TuningJobFactory, UserFactory
from tests.ui.data import job_with_trials, run_with_logs
from tuning.charts import hyperparameter_charts
from tuning.models import Trial, TuningJob

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def owner(db):
    user = UserFactory()
    user.save()  # UserFactory sets the password without saving it; a stale hash would end the session
    return user


@pytest.fixture
def client_in(client, owner):
    client.force_login(owner)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/jobs/new/", "/jobs/1/", "/jobs/1/charts/", "/runs/", "/runs/1/"])
def test_every_page_requires_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.django_db
def test_login_page_signs_in_and_lands_on_the_job_list(client, owner):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    response = client.post("/accounts/login/", {"username": owner.username, "password": "pass-word-123"}, follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert b"No tuning jobs yet" in response.content


@pytest.mark.django_db
def test_job_list_shows_own_jobs_with_progress_and_hides_others(client_in, owner):
    job = job_with_trials(owner, 6, running=2, name="my sweep")
    TuningJobFactory(name="someone else's sweep")
    page = client_in.get("/").content.decode()
    assert "my sweep" in page and "someone else" not in page
    assert "4 / 6" in page  # 4 finished of 6
    assert 'hx-trigger="every 2s"' in page  # a running job: the table polls
    assert f"{job.best_metric_value:.4g}" in page


@pytest.mark.django_db
def test_job_list_stops_polling_when_no_job_is_active(client_in, owner):
    job_with_trials(owner, 3, status=TuningJob.Status.SUCCEEDED, running=0)
    fragment = client_in.get("/", **HX).content.decode()
    assert fragment.lstrip().startswith('<div id="job-table"')
    assert "hx-trigger" not in fragment


@pytest.mark.django_db
def test_job_list_filters_by_status(client_in, owner):
    job_with_trials(owner, 1, status=TuningJob.Status.SUCCEEDED, running=0, name="finished one")
    job_with_trials(owner, 1, status=TuningJob.Status.RUNNING, running=1, name="running one")
    page = client_in.get("/?status=succeeded").content.decode()
    assert "finished one" in page and "running one" not in page
    empty = client_in.get("/?status=failed").content.decode()
    assert "No failed jobs" in empty


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["", "charts/"])
def test_another_users_job_is_404_fragments_included(client_in, suffix):
    job = TuningJobFactory()
    assert client_in.get(f"/jobs/{job.pk}/{suffix}").status_code == 404
    assert client_in.get(f"/jobs/{job.pk}/{suffix}", **HX).status_code == 404


@pytest.mark.django_db
def test_staff_see_every_job(client, owner):
    job = TuningJobFactory()
    staff = UserFactory(is_staff=True)
    staff.save()
    client.force_login(staff)
    assert client.get(f"/jobs/{job.pk}/").status_code == 200


@pytest.mark.django_db
def test_job_page_shows_progress_best_trial_and_trials(client_in, owner):
    job = job_with_trials(owner, 12, running=2)
    best = Trial.objects.best(job.mode).filter(job=job).first()
    page = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert "10 / 12" in page
    assert f'href="/runs/{best.run_id}/"' in page
    assert 'id="trial-12"' in page and 'data-status="running"' in page
    assert 'hx-trigger="every 2s"' in page
    assert reverse("job_charts", args=[job.pk]) in page


@pytest.mark.django_db
def test_trials_stopped_early_have_their_own_colour_legend_and_reason(client_in, owner):
    job = job_with_trials(owner, 6, running=1)
    stopped = list(Trial.objects.filter(job=job).order_by("number")[:2])
    Trial.objects.filter(pk__in=[t.pk for t in stopped]).update(
        status=Trial.Status.STOPPED, end_reason=Trial.EndReason.STOPPED_EARLY, iterations=2
    )
    Trial.objects.filter(job=job, number=3).update(
        status=Trial.Status.FAILED, end_reason=Trial.EndReason.FAILED, error_message="CUDA out of memory"
    )
    page = client_in.get(f"/jobs/{job.pk}/").content.decode()
    assert 'class="progress-bar bar-stopped" style="width: 33%"' in page
    assert 'class="progress-bar bar-failed" style="width: 16%"' in page
    assert "2 stopped early" in page and "1 failed" in page and "2 succeeded" in page
    assert "Stopped early at step 2" in page and "Failed: CUDA out of memory" in page
    listing = client_in.get("/").content.decode()
    assert 'class="progress-bar bar-stopped" style="width: 33%"' in listing


@pytest.mark.django_db
def test_live_fragment_drops_its_trigger_once_the_job_ends(client_in, owner):
    job = job_with_trials(owner, 3, running=1)
    live = client_in.get(f"/jobs/{job.pk}/", **HX).content.decode()
    assert live.lstrip().startswith('<div id="job-live"') and "every 2s" in live
    assert "<html" not in live
    TuningJob.objects.filter(pk=job.pk).update(status=TuningJob.Status.SUCCEEDED)
    final = client_in.get(f"/jobs/{job.pk}/", **HX).content.decode()
    assert "hx-trigger" not in final.split(">", 1)[0]
    assert "every 2s" not in final


@pytest.mark.django_db
def test_trial_table_sorts_by_metric_best_first_and_paginates(client_in, owner):
    job = job_with_trials(owner, 40, status=TuningJob.Status.SUCCEEDED, running=0)
    values = list(Trial.objects.filter(job=job).order_by("-best_metric_value").values_list("number", flat=True))
    page = client_in.get(f"/jobs/{job.pk}/?sort=metric", **HX).content.decode()
    assert page.index(f'id="trial-{values[0]}"') < page.index(f'id="trial-{values[1]}"')
    assert f'id="trial-{values[-1]}"' not in page  # on page 2
    assert "Page 1 of 2" in page
    second = client_in.get(f"/jobs/{job.pk}/?sort=metric&page=2", **HX).content.decode()
    assert f'id="trial-{values[-1]}"' in second


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sort",
    [
        "recent",
        "-recent",
        "number",
        "-number",
        "status",
        "metric",
        "-metric",
        "iterations",
        "duration",
        "-duration",
        "bogus",
    ],
)
def test_every_sort_key_renders(client_in, owner, sort):
    job = job_with_trials(owner, 5, running=1)
    assert client_in.get(f"/jobs/{job.pk}/?sort={sort}", **HX).status_code == 200


def _fragment_cost(client, job, django_assert_max_num_queries, limit):
    with django_assert_max_num_queries(limit) as ctx:
        response = client.get(f"/jobs/{job.pk}/", **HX)
    assert response.status_code == 200
    return len(ctx.captured_queries), len(response.content)


@pytest.mark.django_db
def test_live_fragment_costs_the_same_queries_and_stays_small_at_10_and_1000_trials(
    client_in, owner, django_assert_max_num_queries
):
    small = job_with_trials(owner, 10, name="small")
    large = job_with_trials(owner, 1000, name="large", seed=1)
    queries_small, size_small = _fragment_cost(client_in, small, django_assert_max_num_queries, 10)
    queries_large, size_large = _fragment_cost(client_in, large, django_assert_max_num_queries, 10)
    assert queries_small == queries_large
    assert size_large < 20_000, size_large


@pytest.mark.django_db
def test_charts_cost_the_same_queries_at_10_and_1000_trials(client_in, owner, django_assert_max_num_queries):
    sizes = []
    for n in (10, 1000):
        job = job_with_trials(owner, n, name=f"n{n}", seed=n)
        with django_assert_max_num_queries(10) as ctx:
            response = client_in.get(f"/jobs/{job.pk}/charts/", **HX)
        sizes.append(len(ctx.captured_queries))
        body = response.content.decode()
        assert 'id="job-charts-data"' in body and '"learning-curves"' in body
        assert "every 5s" in body  # running: the charts refresh
    assert sizes[0] == sizes[1]


@pytest.mark.django_db
def test_job_list_query_count_does_not_grow_with_jobs(client_in, owner, django_assert_max_num_queries):
    job_with_trials(owner, 3, name="one")
    with django_assert_max_num_queries(8) as first:
        client_in.get("/")
    for i in range(5):
        job_with_trials(owner, 3, name=f"more {i}", seed=i)
    with django_assert_max_num_queries(8) as second:
        client_in.get("/")
    assert len(first.captured_queries) == len(second.captured_queries)


@pytest.mark.django_db
def test_run_list_links_trial_runs_to_their_job_and_hides_others(client_in, owner):
    job = job_with_trials(owner, 2, status=TuningJob.Status.SUCCEEDED, running=0, name="linked job")
    RunFactory(name="not mine")
    page = client_in.get("/runs/").content.decode()
    assert "linked job" in page and f"/jobs/{job.pk}/" in page
    assert "not mine" not in page


@pytest.mark.django_db
def test_run_list_query_count_does_not_grow_with_runs(client_in, owner, django_assert_max_num_queries):
    job_with_trials(owner, 2, running=0, status=TuningJob.Status.SUCCEEDED)
    with django_assert_max_num_queries(8) as first:
        client_in.get("/runs/")
    job_with_trials(owner, 20, running=0, status=TuningJob.Status.SUCCEEDED)
    with django_assert_max_num_queries(8) as second:
        client_in.get("/runs/")
    assert len(first.captured_queries) == len(second.captured_queries)


@pytest.mark.django_db
def test_run_detail_shows_evaluation_details_logs_and_link_back(client_in, owner):
    job = job_with_trials(owner, 1, status=TuningJob.Status.SUCCEEDED, running=0, name="parent job")
    trial_run = Trial.objects.get(job=job).run
    page = client_in.get(f"/runs/{trial_run.pk}/").content.decode()
    assert "parent job" in page and f"/jobs/{job.pk}/" in page
    run = run_with_logs(owner, details=3)
    page = client_in.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="evaluation-details"' in page and "What is 2+2?" in page
    assert "epoch 30: line" in page
    assert 'id="run-charts-data"' in page and "hx-trigger" not in page


@pytest.mark.django_db
def test_run_log_tail_is_live_while_running_and_bounded(client_in, owner):
    run = run_with_logs(owner, status=Run.Status.RUNNING, lines=500)
    fragment = client_in.get(f"/runs/{run.pk}/", **HX).content.decode()
    assert fragment.lstrip().startswith('<div id="run-live"') and "every 2s" in fragment
    assert "epoch 500: line" in fragment and "epoch 300: line" not in fragment
    assert "last 200 of 500 lines" in fragment


@pytest.mark.django_db
def test_another_users_run_is_404(client_in):
    run = RunFactory()
    assert client_in.get(f"/runs/{run.pk}/").status_code == 404
    assert client_in.get(f"/runs/{run.pk}/", **HX).status_code == 404


@pytest.mark.django_db
def test_job_form_defaults_search_learning_rate_log_uniform_and_batch_size_by_choice(client_in):
    page = client_in.get("/jobs/new/?trainer=sklearn-mlp").content.decode()
    assert 'name="hp.learning_rate.mode"' in page
    lr_row = page[page.index('id="hp-learning_rate"') :]
    assert '<option value="loguniform" selected' in lr_row[: lr_row.index("</select>")]
    bs_row = page[page.index('id="hp-batch_size"') :]
    assert '<option value="choice" selected' in bs_row[: bs_row.index("</select>")]
    assert 'value="16, 32, 64"' in bs_row


@pytest.mark.django_db
def test_job_form_switches_trainer_fields_as_a_fragment(client_in):
    fragment = client_in.get("/jobs/new/?trainer=sklearn-mlp&dataset=wine", **HX).content.decode()
    assert fragment.lstrip().startswith('<form id="job-form"')
    assert '<option value="wine" selected' in fragment


@pytest.mark.django_db
def test_history_restore_gets_the_whole_page(client_in, owner):
    job = job_with_trials(owner, 3, running=1)
    page = client_in.get(f"/jobs/{job.pk}/?sort=metric", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in page.content.decode()


@pytest.mark.django_db
def test_run_metric_curves_are_thinned_in_the_database(client_in, owner):
    from runs.models import MetricPoint

    run = RunFactory(owner=owner, status=Run.Status.SUCCEEDED)
    MetricPoint.objects.bulk_create([MetricPoint(run=run, step=s, values={"loss": 1 / s}) for s in range(1, 10_001)])
    page = client_in.get(f"/runs/{run.pk}/").content.decode()
    data = page[page.index('id="run-charts-data"') :]
    data = data[data.index(">") + 1 : data.index("</script>")]
    import json

    x = json.loads(data)["loss"]["x"]
    assert 1_000 <= len(x) <= 2_001 and x[0] == 1 and x[-1] == 10_000


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "factory", "per_page"),
    [("/runs/", "run", "runs.views.RUNS_PER_PAGE"), ("/", "job", "tuning.views.JOBS_PER_PAGE")],
)
def test_lists_page_newer_and_older_keeping_the_filter(client_in, owner, url, factory, per_page):
    from django.utils.module_loading import import_string

    model_factory = {"run": RunFactory, "job": TuningJobFactory}[factory]
    model_factory.create_batch(import_string(per_page) + 1, owner=owner, status="succeeded")

    first = client_in.get(f"{url}?status=succeeded").content.decode()
    second = client_in.get(f"{url}?status=succeeded&page=2").content.decode()

    assert "Page 1 of 2" in first and "Older →" in first and "← Newer" not in first
    assert "status=succeeded" in first[first.index("Page 1 of 2") :]
    assert "Page 2 of 2" in second and "← Newer" in second


@pytest.mark.django_db
def test_a_log_scale_int_is_drawn_on_a_log_axis():
    space = {
        "hidden_units": {"type": "int", "low": 4, "high": 256, "log": True},
        "hidden_layers": {"type": "int", "low": 1, "high": 4},
    }
    job = TuningJobFactory(search_space=space)
    for units, layers, value in ((4, 1, 0.5), (64, 2, 0.7), (256, 4, 0.6)):
        TrialFactory(job=job, hyperparameters={"hidden_units": units, "hidden_layers": layers}, best_metric_value=value)
    charts = {chart["title"]: chart for chart in hyperparameter_charts(job)}
    assert charts["hidden_units"]["xLog"] is True and charts["hidden_units"]["x"] == [4.0, 64.0, 256.0]
    assert charts["hidden_layers"]["xLog"] is False
