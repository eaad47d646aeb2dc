"""Registry pages: list, model, version (lineage, comparison), download, the promote and alias forms."""

from __future__ import annotations

import io
import shutil
import zipfile

import pytest
from django.test import Client

from registry import services
from registry.models import ModelAlias
from tests.factories import TrialFactory, TuningJobFactory, UserFactory
from tuning.models import TuningJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def promoted(user, run, alias=None):
    version, _ = services.model_version_promote(run=run, by=user, model_name="digits", alias=alias)
    return version


def test_models_list_and_model_page_show_versions_scores_runs_aliases_sizes(
    browser, user, make_run, django_assert_max_num_queries
):
    promoted(user, make_run(user, score=0.8))
    version = promoted(user, make_run(user, score=0.9), alias="champion")
    with django_assert_max_num_queries(8):
        page = browser.get("/models/").content.decode()
    assert "digits" in page and "champion" in page and "(v2)" in page
    model_page = browser.get(f"/models/{version.model_id}/").content.decode()
    assert 'id="version-2"' in model_page and 'id="version-1"' in model_page
    assert f"run {version.source_run_id}" in model_page and "0.9" in model_page and "7\xa0bytes" in model_page


def test_version_page_shows_lineage_links_and_compares_predictions(browser, user, make_run):
    details_a = [{"prompt": "1+1", "predicted": "2", "correct": True}, {"prompt": "2+2", "predicted": "4"}]
    details_b = [{"prompt": "1+1", "predicted": "3", "correct": False}, {"prompt": "2+2", "predicted": "4"}]
    run = make_run(user, score=0.9, details=details_a, dataset="addition@1")
    job = TuningJobFactory(owner=user, status=TuningJob.Status.SUCCEEDED, best_run=run, name="the search")
    TrialFactory(job=job, run=run, number=2)
    version = promoted(user, run)
    promoted(user, make_run(user, score=0.5, details=details_b))
    page = browser.get(f"/models/{version.model_id}/versions/1/?compare=2").content.decode()
    for link in (f'href="/jobs/{job.pk}/"', f'href="/jobs/{job.pk}/#trials"', f'href="/runs/{run.pk}/"'):
        assert link in page
    assert "addition@1" in page and "trial 2" in page
    assert 'id="compare-metrics"' in page and 'id="compare-items"' in page
    items = page[page.index('id="compare-items"') :]
    assert "1+1" in items and "2+2" not in items


def test_page_download_and_missing_files(browser, user, make_run, registry_dir):
    version = promoted(user, make_run(user, {"model.pkl": b"w"}))
    response = browser.get(f"/models/{version.model_id}/versions/1/download/")
    assert zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).read("digits-v1/model.pkl") == b"w"
    shutil.rmtree(registry_dir)
    missing = browser.get(f"/models/{version.model_id}/versions/1/download/")
    assert missing.status_code == 410 and "missing from the registry storage" in missing.content.decode()


def test_alias_form_moves_and_reports_errors(browser, user, make_run):
    promoted(user, make_run(user))
    version = promoted(user, make_run(user))
    url = f"/models/{version.model_id}/aliases/"
    assert browser.post(url, {"alias": "staging", "version": "2"}).status_code == 302
    assert ModelAlias.objects.get(name="staging").version == version
    page = browser.post(url, {"alias": "Bad Alias", "version": "1"}, follow=True).content.decode()
    assert "The alias was not moved" in page and ModelAlias.objects.count() == 1


def test_promote_form_on_the_run_and_job_pages(browser, user, make_run):
    run = make_run(user)
    job = TuningJobFactory(owner=user, status=TuningJob.Status.SUCCEEDED, best_run=run)
    assert 'id="promote-form"' in browser.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="promote-form"' in browser.get(f"/jobs/{job.pk}/").content.decode()
    TuningJob.objects.filter(pk=job.pk).update(status=TuningJob.Status.RUNNING)
    assert 'id="promote-form"' not in browser.get(f"/jobs/{job.pk}/").content.decode()
    response = browser.post(f"/models/promote/run/{run.pk}/", {"model": "digits", "alias": "champion", "next": "/x/"})
    assert response.status_code == 302 and response["Location"].endswith("/versions/1/")
    refused = browser.post(f"/models/promote/run/{run.pk}/", {"model": "Bad", "next": f"/jobs/{job.pk}/"})
    assert refused["Location"] == f"/jobs/{job.pk}/"
    outside = browser.post(f"/models/promote/run/{run.pk}/", {"model": "Bad", "next": "https://evil.example/"})
    assert outside["Location"] == f"/runs/{run.pk}/"


def test_another_users_model_pages_are_404(user, make_run):
    version = promoted(user, make_run(user))
    other = Client()
    other.force_login(UserFactory())
    for url in ("", "versions/1/", "versions/1/download/"):
        assert other.get(f"/models/{version.model_id}/{url}").status_code == 404
    assert "digits" not in other.get("/models/").content.decode()
