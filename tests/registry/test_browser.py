"""The registry in real headless Chromium (Debian's /usr/bin/chromium, the project's flags): promote
from the job page, move an alias on the model page, download the version."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from registry.models import AliasChange, ModelAlias, ModelVersion
from tests.browser import screenshot
from tests.factories import TrialFactory, TuningJobFactory
from tuning.models import TuningJob

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_promote_from_the_job_page_move_an_alias_and_download(signed_in_page, browser_user, make_run, tmp_path):
    page = signed_in_page
    first = make_run(browser_user, {"model.pkl": b"first weights"}, score=0.8)
    best = make_run(browser_user, {"model.pkl": b"best weights", "notes.txt": b"hi"}, score=0.9)
    job = TuningJobFactory(owner=browser_user, status=TuningJob.Status.SUCCEEDED, best_run=best, name="sweep")
    TrialFactory(job=job, run=best, number=1)

    # The first version from the run page, the second from the job page, with an alias.
    page.goto(f"/runs/{first.pk}/")
    page.fill("#promote-form input[name=model]", "digits")
    page.click("#promote-form button[type=submit]")
    page.wait_for_url("**/versions/1/")
    page.goto(f"/jobs/{job.pk}/")
    page.fill("#promote-form input[name=model]", "digits")
    page.fill("#promote-form input[name=alias]", "champion")
    page.click("#promote-form button[type=submit]")
    page.wait_for_url("**/versions/2/")
    assert "digits v2" in page.locator("h1").inner_text()
    assert page.locator("#lineage a", has_text="job sweep").count() == 1
    version = ModelVersion.objects.get(version=2)
    assert version.source_run_id == best.pk and version.source_job_id == job.pk

    # Move the alias back to v1 on the model page.
    page.click(f"#main a[href='/models/{version.model_id}/']")
    page.wait_for_url(f"**/models/{version.model_id}/")
    page.fill("#alias-form input[name=alias]", "champion")
    page.select_option("#alias-form select[name=version]", "1")
    page.click("#alias-form button[type=submit]")
    page.wait_for_selector("text=Alias champion now points at v1.")
    assert page.locator("#version-1 .aliases").inner_text().strip() == "champion"
    assert ModelAlias.objects.get(name="champion").version.version == 1
    assert list(AliasChange.objects.values_list("from_version", "to_version")) == [(2, 1), (None, 2)]
    screenshot(page, "registry-model")

    # Download v2 from its page: a zip of its files, their sha256 as the manifest says.
    page.goto(f"/models/{version.model_id}/versions/2/")
    with page.expect_download() as info:
        page.click("#download")
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.name == "digits-v2.zip"
    archive = zipfile.ZipFile(path)
    assert sorted(archive.namelist()) == ["digits-v2/model.pkl", "digits-v2/notes.txt"]
    for entry in version.manifest:
        assert hashlib.sha256(archive.read(f"digits-v2/{entry['path']}")).hexdigest() == entry["sha256"]
