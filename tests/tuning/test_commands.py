"""The management commands behind the README's demo: `bootstrap` and `seed_demo`."""

from __future__ import annotations

import io
import stat

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

from tests.factories import UserFactory
from tuning.demo import DEMO_JOB, DEMO_JOB_NAME
from tuning.models import TuningJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    return tmp_path


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_bootstrap_creates_the_admin_once_with_its_password_file_and_the_demo_job(data_dir):
    first = run("bootstrap")

    password_file = data_dir / "admin-password.txt"
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600  # readable by the installing user only
    assert f"Log in as 'admin' with the password in {password_file}: {password}" in first
    admin = authenticate(username="admin", password=password)
    assert admin is not None and admin.is_superuser and admin.is_staff
    job = TuningJob.objects.get(owner=admin, name=DEMO_JOB_NAME)
    assert job.status == TuningJob.Status.CREATED  # ready for one click, not started
    assert (job.trainer, job.dataset, job.num_samples) == (
        DEMO_JOB["trainer"],
        DEMO_JOB["dataset"],
        DEMO_JOB["num_samples"],
    )

    second = run("bootstrap")

    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert password_file.read_text().strip() == password  # not reset
    assert authenticate(username="admin", password=password) is not None
    assert TuningJob.objects.filter(name=DEMO_JOB_NAME).count() == 1
    assert f"already exists: #{job.pk}" in second


def test_bootstrap_keeps_an_existing_admin_and_writes_no_password(data_dir):
    owner = UserFactory(is_superuser=True, is_staff=True)

    run("bootstrap")

    assert not (data_dir / "admin-password.txt").exists()
    assert not get_user_model().objects.filter(username="admin").exists()
    assert TuningJob.objects.get(name=DEMO_JOB_NAME).owner == owner


def test_seed_demo_creates_one_job_per_owner_and_is_idempotent(data_dir):
    user = UserFactory()

    assert "demo tuning job created" in run("seed_demo", "--owner", user.username)
    assert "already exists" in run("seed_demo", "--owner", user.username)

    job = TuningJob.objects.get(owner=user)
    assert job.name == DEMO_JOB_NAME and job.search_space.keys() == DEMO_JOB["search_space"].keys()
    assert (job.metric, job.mode, job.scheduler) == (DEMO_JOB["metric"], DEMO_JOB["mode"], DEMO_JOB["scheduler"])


def test_seed_demo_without_an_admin_or_with_an_unknown_owner_says_what_to_do(data_dir):
    with pytest.raises(CommandError, match="no admin yet: run `manage.py bootstrap`"):
        run("seed_demo")
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        run("seed_demo", "--owner", "nobody")
    assert not TuningJob.objects.exists()
